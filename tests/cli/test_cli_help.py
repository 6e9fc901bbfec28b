"""One vocabulary across the command line: every command and subcommand has its own ``--help`` description
(plain text, no RST), posts are read with ``--data`` everywhere, and JSONL outputs accept ``--out -``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re

import pytest

from ximgctx.cli import COMMANDS, command_parsers, main

#: commands that read posts: each must take them as --data (``convert`` reads a published dataset's folder,
#: ``--dataset-dir``, and ``simulate-labeling`` a ContextBench folder, ``--contextbench``).
READS_POSTS = [
    "govern",
    "purge",
    "evaluate",
    "predict",
    "moderate",
    "calibrate",
    "index",
    "aggregate",
    "select",
    "memory add",
    "queue add",
    "shard",
]


def _help(argv: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*argv, "--help"])
        except SystemExit as e:
            code = e.code
    assert code in (0, None), f"ximgctx {' '.join(argv)} --help exited {code}: {err.getvalue()}"
    return out.getvalue()


def _every_command() -> list[list[str]]:
    return [prefix for prefix, _ in command_parsers()]


def _description(text: str) -> str:
    """The text between the usage block and the first argument section."""
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    return re.split(r"^(?:positional arguments|options|optional arguments):", body, flags=re.M)[0].strip()


def test_every_subcommand_has_its_own_plain_description():
    commands = _every_command()
    names = {" ".join(c) for c in commands}
    # the walk reaches the nested commands, not only the top level
    assert {"memory add", "policy init", "queue export", "queue labeler", "bench serve"} <= names
    seen: dict[str, str] = {}
    for argv in commands:
        name = " ".join(argv)
        text = _help(argv)
        assert text.startswith(f"usage: ximgctx {name}"), name
        desc = _description(text)
        assert len(desc) >= 40, f"{name}: no description of its own: {desc!r}"
        assert "``" not in desc and not re.search(r":(class|func|mod|meth):`", desc), f"{name}: RST markup"
        first = desc.splitlines()[0]
        assert first not in seen, f"{name} repeats the description of {seen.get(first)}"
        seen[first] = name


def test_top_level_and_bench_help_list_every_command():
    text = _help([])
    assert all(f"  {name} " in text for name in COMMANDS)
    from ximgctx.bench import BENCHMARKS

    bench = _help(["bench"])
    assert all(re.search(rf"^\s+{b}\s+\S", bench, flags=re.M) for b in BENCHMARKS), bench


@pytest.mark.parametrize("name", READS_POSTS)
def test_posts_are_read_with_data(name):
    text = _help(name.split())
    assert re.search(r"^\s+--data\b", text, flags=re.M), f"{name} reads posts without --data"
    for old in ("--pool", "--src", "--posts"):  # former names, removed in 0.2.0
        assert not re.search(rf"(^|[\s,]){old}(?![\w-])", text, flags=re.M), f"{name}: still takes {old}"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_aggregate_writes_jsonl_to_stdout(tmp_path, capsys):
    votes = tmp_path / "votes.csv"
    with open(votes, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["post_id", "labeler", "task", "label"])
        for post, labels in {"p1": ["joke", "joke", "threat"], "p2": ["protest"] * 3}.items():
            for i, label in enumerate(labels):
                w.writerow([post, f"l{i}", "intent", label])
    code, out, err = _run(["aggregate", "--votes", str(votes), "--out", "-", "--method", "majority"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["id"]: r["labels"]["intent"] for r in rows} == {"p1": "joke", "p2": "protest"}
    assert json.loads(err)["out"] == "-"
    assert not list(tmp_path.glob("-*"))  # no file named '-' and no labelers report beside it


def test_govern_and_predict_write_jsonl_to_stdout(tmp_path, capsys, posts):
    from ximgctx.data.io import write_posts

    from .._inference_fixtures import model_dir

    for i, p in enumerate(posts):
        p.meta = {"visibility": "public"}
        p.author = f"u{i}"
    manifest = tmp_path / "posts.jsonl"
    write_posts(posts, manifest)
    argv = ["govern", "--data", str(manifest), "--out", "-", "--report", str(tmp_path / "audit.json")]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    governed = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in governed] == [p.id for p in posts]
    assert "kept" in err  # the summary moves to stderr when stdout carries the posts
    code, out, err = _run(
        ["predict", "--model", str(model_dir()), "--data", str(manifest), "--out", "-", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    preds = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in preds] == [p.id for p in posts]
    assert all("tasks" in r for r in preds)


def test_a_bug_is_not_reported_as_a_user_error(monkeypatch, tmp_path):
    """Only ximgctx's own errors become a one-line message; anything else keeps its traceback."""
    import ximgctx.hitl.aggregate as aggregate

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(aggregate, "aggregate_votes", broken)
    votes = tmp_path / "v.csv"
    votes.write_text("post_id,labeler,task,label\np1,a,intent,joke\n")
    with pytest.raises(KeyError, match="a bug"):
        main(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "out.jsonl")])


def test_flags_made_from_a_dataclass_take_each_fields_comment():
    """``add_dataclass_args`` documents each flag with its field's comment, trailing or on the lines above."""
    import argparse
    from dataclasses import dataclass

    from ximgctx.cli._args import add_dataclass_args, dataclass_from_args, field_comments

    @dataclass
    class Settings:
        rounds: int = 5  # labeling rounds
        # share of labelers answering at random, a comment long enough that it sits on
        # the lines above its field
        spammers: float = 0.2
        name: str = "x"

    assert field_comments(Settings) == {
        "rounds": "labeling rounds",
        "spammers": "share of labelers answering at random, a comment long enough that it sits on the lines "
        "above its field",
    }
    p = argparse.ArgumentParser()
    assert add_dataclass_args(p, Settings) == ["rounds", "spammers", "name"]
    args = p.parse_args(["--rounds", "3", "--spammers", "0.5"])
    assert dataclass_from_args(Settings, args) == Settings(rounds=3, spammers=0.5, name="x")
