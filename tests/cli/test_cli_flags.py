"""One vocabulary: across every command and sub-command a flag name has one meaning (dest, type, action,
choices, help), and flags generated from config dataclasses match the dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections import defaultdict

import pytest

from ximgctx.cli import command_parsers
from ximgctx.cli._args import FLAGS, source_constant, source_fields

#: flag -> why its help may differ between commands (dest, type, action and choices are still compared).
HELP_EXCEPTIONS = {
    "--out": "always what the command writes, but each command's help says what that is (a folder, JSONL...)",
    "--max-replies": "the most replies a post has: generated (synth) or accepted (serve); each help is its "
    "config field's comment (ContextBenchConfig, ServeConfig)",
}


def _meaning(action: argparse.Action) -> dict[str, object]:
    kind = type(action).__name__
    help_ = action.help or ""
    if kind == "_AppendAction" and help_.endswith(" (repeatable)"):  # add(..., repeat=True): several targets
        kind, help_ = "_StoreAction", help_.removesuffix(" (repeatable)")
    return {
        "dest": action.dest,
        "type": getattr(action.type, "__name__", action.type),
        "action": kind,
        "choices": None if action.choices is None else sorted(map(str, action.choices)),
        "help": help_,
    }


def _matrix() -> dict[str, dict[str, dict[str, object]]]:
    """option string -> command -> meaning."""
    found: dict[str, dict[str, dict[str, object]]] = defaultdict(dict)
    for prefix, parser in command_parsers():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            for option in action.option_strings:
                found[option][" ".join(prefix)] = _meaning(action)
    return found


def test_every_flag_means_one_thing_everywhere() -> None:
    matrix = _matrix()
    assert len(matrix) > 100 and len({c for m in matrix.values() for c in m}) >= 33  # the walk saw it all
    problems = []
    for option, by_command in sorted(matrix.items()):
        for field in ("dest", "type", "action", "choices", "help"):
            if field == "help" and option in HELP_EXCEPTIONS:
                continue
            values = defaultdict(list)
            for command, meaning in by_command.items():
                values[repr(meaning[field])].append(command)
            if len(values) > 1:
                problems.append(f"{option} {field}: " + "; ".join(f"{v} in {c}" for v, c in values.items()))
    assert not problems, "\n".join(problems)


def test_a_flag_used_by_several_commands_is_in_the_vocabulary() -> None:
    from ximgctx.cli import COMMANDS

    def module(command: str) -> str:  # train and pretrain share one parser: one module, one definition
        top = command.split()[0]
        return COMMANDS[top][0] + (command if top == "bench" else "")

    shared = {o for o, by in _matrix().items() if len({module(c) for c in by}) > 1}
    generated = {"--" + f.name.replace("_", "-") for f in source_fields("ximgctx.serve.config:ServeConfig")}
    generated |= {"--db", "--overlap", "--lease-s", "--gold-rate", "--n-test"}  # QueueConfig, ContextBench
    generated |= {"--graceful-timeout", "--api-key-file", "--allow-url-host", "--barrier-timeout"}
    missing = sorted(shared - set(FLAGS) - generated)
    assert not missing, f"shared flags outside ximgctx.cli._args.FLAGS: {missing}"


def test_every_model_loading_command_can_check_the_digest_and_opt_into_remote_archs() -> None:
    matrix = _matrix()
    loads_model = {c for c, m in matrix["--model"].items() if not c.startswith("bench") and c != "purge"}
    assert {"predict", "moderate", "calibrate", "index", "search", "serve", "queue serve"} <= loads_model
    for flag in ("--expect-sha256", "--trust-remote-arch"):
        assert loads_model <= set(matrix[flag]), (
            f"{flag} missing in {sorted(loads_model - set(matrix[flag]))}"
        )


def test_queue_serve_takes_every_flag_of_serve() -> None:
    parsers = {" ".join(prefix): p for prefix, p in command_parsers()}
    serve = {o for a in parsers["serve"]._actions for o in a.option_strings}
    queue_serve = {o for a in parsers["queue serve"]._actions for o in a.option_strings}
    assert serve <= queue_serve, sorted(serve - queue_serve)


def test_every_serve_config_field_is_settable() -> None:
    from ximgctx.serve.config import ServeConfig

    parsers = {" ".join(prefix): p for prefix, p in command_parsers()}
    dests = {a.dest for a in parsers["serve"]._actions}
    by_file = {
        "api_keys": "api_key_file",
        "allow_url_hosts": "allow_url_host",
        "allow_url_networks": "allow_url_network",
    }
    assert [f.name for f in dataclasses.fields(ServeConfig) if by_file.get(f.name, f.name) not in dests] == []
    args = parsers["serve"].parse_args(["--model", "org/name", "--max-inputs", "7", "--retry-after-s", "3"])
    assert (args.max_inputs, args.retry_after_s, args.url_timeout_s) == (7, 3, ServeConfig().url_timeout_s)


@pytest.mark.parametrize(
    "ref",
    [
        "ximgctx.serve.config:ServeConfig",
        "ximgctx.queue.config:QueueConfig",
        "ximgctx.contextbench._generate:ContextBenchConfig",
        "ximgctx.hitl.simulate:SimulationConfig",
        "ximgctx.data.images:ImageLimits",
    ],
)
def test_fields_read_from_source_match_the_imported_dataclass(ref: str) -> None:
    """The flags are made from the dataclass's source (no import at --help); here the import is the
    reference: same names, same types and same defaults."""
    import importlib

    module, name = ref.split(":")
    cls = getattr(importlib.import_module(module), name)
    imported = {f.name: f for f in source_fields(cls)}
    read = {f.name: f for f in source_fields(ref)}
    assert list(read) == list(imported)
    for f in dataclasses.fields(cls):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        got = read[f.name].default
        if got is not dataclasses.MISSING:  # defaults the source shows plainly are read exactly
            assert got == default or (isinstance(default, tuple) and tuple(got) == default), f.name
        if read[f.name].type in (int, float, str, bool):
            assert read[f.name].type == imported[f.name].type, f.name
        assert read[f.name].comment == imported[f.name].comment, f.name


def test_choices_read_from_source_match_the_library() -> None:
    from ximgctx.evaluation.calibration import THRESHOLD_OBJECTIVES
    from ximgctx.evaluation.predict import ABLATION_KEYS
    from ximgctx.hitl.aggregate import DS_MODELS, METHODS
    from ximgctx.hitl.select import STRATEGIES

    assert source_constant("ximgctx.hitl.aggregate:DS_MODELS") == DS_MODELS
    assert source_constant("ximgctx.hitl.select:STRATEGIES") == STRATEGIES
    assert source_constant("ximgctx.evaluation.predict:ABLATION_KEYS") == ABLATION_KEYS
    assert source_constant("ximgctx.evaluation.calibration:THRESHOLD_OBJECTIVES") == THRESHOLD_OBJECTIVES
    assert sorted(FLAGS["--method"]["choices"]) == sorted(METHODS)


def _documented_commands() -> list[tuple[str, str]]:
    """``ximgctx ...`` command lines in the README, config headers and the CLI's own descriptions."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    texts = {"README.md": (root / "README.md").read_text(encoding="utf-8")}
    texts |= {
        p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in root.glob("configs/**/*.yaml")
    }
    texts |= {" ".join(prefix): parser.format_help() for prefix, parser in command_parsers()}
    for where, text in texts.items():
        for line in text.replace("\\\n", " ").splitlines():
            for command in re.findall(r"ximgctx [^`&;#]*", line):  # one command per backtick span or && part
                words = command.split()
                if len(words) > 1 and not words[1].startswith("-") and "<" not in command:
                    found.append((where, command))
    return found


def test_documented_command_lines_use_flags_that_exist() -> None:
    """Every ``--flag`` of a command line in the README, a config header or a command's help is one of that
    command's flags (a rename leaves no stale example behind)."""
    parsers = {" ".join(prefix): p for prefix, p in command_parsers()}
    stale = []
    lines = _documented_commands()
    assert len(lines) > 40
    for where, line in lines:
        words = line.replace("`", " ").replace("[", " ").replace("]", " ").replace("(", " ").split()[1:]
        command = next(
            (c for c in sorted(parsers, key=len, reverse=True) if words[: len(c.split())] == c.split()), None
        )
        if command is None:
            continue  # prose such as "ximgctx train's options"
        options = {o for a in parsers[command]._actions for o in a.option_strings}
        for word in words:
            flag = word.split("=")[0].rstrip(",.;:'\"|")
            if flag.startswith("--") and len(flag) > 2 and flag not in options:
                stale.append(f"{where}: ximgctx {command} has no {flag}: {line.strip()}")
    assert not stale, "\n".join(stale)
