"""Every YAML file under configs/ parses and validates against the loader its top-level keys call for.

A file no loader recognises fails the test: a config nobody validates is a config that silently rots.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ximgctx.config import TaskSpec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml")) + sorted(CONFIGS.rglob("*.yml"))


def kind_of(data: dict) -> str:
    keys = set(data)
    if "contextbench" in keys and "model" in keys:
        return "quickstart"
    if "model" in keys:
        return "experiment"
    if "encoder" in keys and ({"contrastive", "train"} & keys):
        return "pretrain"
    if "compute_environment" in keys or "distributed_type" in keys:
        return "accelerate"
    if "tasks" in keys:
        return "tasks"
    if "categories" in keys:
        return "moderation"
    if keys & {"allowed_visibilities", "redact", "opt_out_authors", "drop_direct_messages"}:
        return "governance"
    return "unknown"


def test_there_are_configs() -> None:
    names = {p.relative_to(CONFIGS).as_posix() for p in FILES}
    assert {"quickstart.yaml", "vit_b32_lora.yaml", "accelerate/ddp.yaml", "accelerate/fsdp.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(CONFIGS).as_posix() for p in FILES])
def test_config_validates(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: a config is a mapping"
    kind = kind_of(data)
    if kind == "quickstart":
        from ximgctx.quickstart import QuickstartConfig, load_quickstart_config

        cfg = load_quickstart_config(path)
        if path.name == "quickstart.yaml":  # the file documents the built-in defaults: they must not drift
            assert cfg.to_dict() == QuickstartConfig().to_dict(), (
                "configs/quickstart.yaml != QuickstartConfig()"
            )
    elif kind == "experiment":
        from ximgctx.training import load_experiment

        cfg = load_experiment(path)
        assert cfg.model.tasks and cfg.train.output_dir
    elif kind == "pretrain":
        from ximgctx.training import load_pretrain_experiment

        load_pretrain_experiment(path)
    elif kind == "accelerate":
        from accelerate.commands.config.config_args import load_config_from_file
        from accelerate.utils import DistributedType

        cfg = load_config_from_file(str(path))
        assert cfg.distributed_type in set(DistributedType)
        assert cfg.num_processes >= 1 and cfg.mixed_precision in ("no", "bf16", "fp16")
    elif kind == "tasks":
        specs = [TaskSpec(**t) for t in data["tasks"]]
        assert len({s.name for s in specs}) == len(specs)
    elif kind == "governance":
        from ximgctx.governance import GovernancePolicy

        GovernancePolicy.from_yaml(path)
    elif kind == "moderation":
        from ximgctx.models.policy import ModerationPolicy

        ModerationPolicy.from_yaml(path)
    else:
        pytest.fail(f"{path}: no loader recognises its top-level keys {sorted(data)}; add one to this test")


RUNNABLE = [
    p
    for p in FILES
    if kind_of(yaml.safe_load(p.read_text()))
    in ("quickstart", "experiment", "pretrain", "accelerate", "moderation", "governance")
]


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.relative_to(CONFIGS).as_posix() for p in RUNNABLE])
def test_first_comment_is_the_command_that_runs_it(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# "), f"{path}: the first line must be a comment with the command"
    command = first[2:]
    assert command.split()[0] in ("ximgctx", "accelerate", "torchrun"), f"{path}: {first!r}"
    assert f"configs/{path.relative_to(CONFIGS).as_posix()}" in command, (
        f"{path}: the command must name the file"
    )


def test_overrides_and_unknown_keys(tmp_path: Path) -> None:
    from ximgctx.config import ConfigError
    from ximgctx.training import load_experiment

    cfg = load_experiment(
        CONFIGS / "vit_b32_lora.yaml",
        ["train.max_steps=7", "model.fusion.kind=concat", "model.tasks=tasks/hateful_memes.yaml"],
    )
    assert cfg.train.max_steps == 7 and cfg.model.fusion.kind == "concat"
    assert [t.name for t in cfg.model.tasks] == ["hateful"]  # resolved against the config's folder
    with pytest.raises(ConfigError, match=r"train\.optim\.lr\.lroa"):
        load_experiment(CONFIGS / "vit_b32_lora.yaml", ["train.optim.lr.lroa=1e-3"])
    with pytest.raises(ConfigError, match="train.batch_size must be a positive integer"):
        load_experiment(CONFIGS / "vit_b32_lora.yaml", ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="metric_for_best"):
        load_experiment(CONFIGS / "vit_b32_lora.yaml", ["train.metric_for_best=accuracy"])


def test_exponent_floats_without_a_dot(tmp_path: Path) -> None:
    """``1e-4`` is a string to PyYAML (YAML 1.1); learning rates are written that way, so ximgctx reads them
    as floats in files and in overrides alike, and leaves everything else as PyYAML would."""
    from ximgctx import _yaml
    from ximgctx.training import load_experiment

    assert _yaml.safe_load("a: 1e-4\nb: 5E+3\nc: .5\nd: 8\ne: 1e-4x\nf: -2.5e-1\ng: 1_000") == {
        "a": 1e-4,
        "b": 5000.0,
        "c": 0.5,
        "d": 8,
        "e": "1e-4x",
        "f": -0.25,
        "g": 1000,
    }
    assert yaml.safe_load("a: 1e-4") == {"a": "1e-4"}  # what plain PyYAML would have given
    cfg = load_experiment(
        CONFIGS / "vit_b32_lora.yaml", ["train.optim.lr.lora=5e-4", "train.optim.lr.heads=2E-3"]
    )
    assert cfg.train.optim.lr.lora == 5e-4 and cfg.train.optim.lr.heads == 2e-3
    text = (CONFIGS / "vit_b32_lora.yaml").read_text().replace("lr: {lora: ", "lr: {lora_text: 3e-5, lora: ")
    assert "lora_text: 3e-5" in text
    (tmp_path / "tasks").mkdir()
    for f in (CONFIGS / "tasks").iterdir():
        (tmp_path / "tasks" / f.name).write_text(f.read_text())
    (tmp_path / "x.yaml").write_text(text)
    assert load_experiment(tmp_path / "x.yaml").train.optim.lr.lora_text == 3e-5
