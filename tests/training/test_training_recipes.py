"""The shape of training: the simulated labeling loop trains with fine-tuning's own loss (task weights apply),
the CLIs report a user's problem in one line and let a bug keep its traceback, and no function of the training
package runs past 80 lines nor a module past 600."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.training.test_training import REPO, experiment
from ximgctx.config import TaskSpec
from ximgctx.contextbench import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _simulate_loss(weight: float) -> float:
    from ximgctx.hitl.cached import Features, finetune
    from ximgctx.hitl.simulate import SimulationConfig, _build_model

    config = SimulationConfig(
        out_dir="unused", epochs=1, batch_size=16, lr=0.0, hidden_dim=16, fusion_layers=1
    )
    spec = TaskSpec(**{**next(t for t in TASKS if t["name"] == "intent"), "weight": weight})
    model = _build_model(config, [spec])
    d, k = model.encoder.embed_dim, max(model.config.limits.max_replies, 1)
    g = torch.Generator().manual_seed(0)
    feats = Features(  # cached modality embeddings of 16 posts
        image=torch.randn(16, d, generator=g),
        text=torch.randn(16, d, generator=g),
        replies=torch.randn(16, k, d, generator=g),
        reply_mask=torch.ones(16, k, dtype=torch.bool),
    )
    targets = {
        "intent": torch.tensor(
            np.random.default_rng(1).integers(0, 2, (16, len(spec.labels))), dtype=torch.float32
        )
    }
    torch.manual_seed(0)  # the same dropout for both weights
    sizes = {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr}
    return finetune(model, feats, np.arange(16), targets, generator=torch.Generator().manual_seed(0), **sizes)


def test_the_simulated_loop_trains_with_the_task_weight() -> None:
    """With lr=0 nothing moves, so the loss of weight 2 is exactly twice the loss of weight 1 (it was equal
    when the simulation summed unweighted task losses)."""
    one, two = _simulate_loss(1.0), _simulate_loss(2.0)
    assert one > 0 and two == pytest.approx(2 * one, rel=1e-6)


# ---------------------------------------------------------------------------------------------- CLI


def test_the_cli_reports_a_used_output_dir_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ximgctx.cli import train as cli
    from ximgctx.errors import OutputError
    from ximgctx.training import finetune

    def used(*args: object, **kwargs: object) -> None:
        raise OutputError(f"{tmp_path}: train.output_dir already holds files of another run")

    monkeypatch.setattr(finetune, "train", used)
    (tmp_path / "x.yaml").touch()  # --config must exist (an argument error otherwise)
    assert cli.main(["--config", str(tmp_path / "x.yaml")], command="train") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ximgctx train: {tmp_path}: train.output_dir already holds files of another run"]


def test_the_cli_lets_a_bug_keep_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ximgctx.cli import train as cli
    from ximgctx.training import finetune

    def bug(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setattr(finetune, "train", bug)
    (tmp_path / "x.yaml").touch()
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["--config", str(tmp_path / "x.yaml")], command="train")


def test_the_cli_passes_overwrite_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ximgctx.cli import train as cli
    from ximgctx.training import finetune

    seen: dict = {}

    def record(config: str, **kwargs: object) -> None:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(finetune, "train", record)
    (tmp_path / "x.yaml").touch()
    with pytest.raises(SystemExit):
        cli.main(["--config", str(tmp_path / "x.yaml"), "--overwrite", "--resume", "latest"], command="train")
    assert seen["overwrite"] is True and seen["resume"] == "latest"


def test_a_used_output_dir_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ximgctx.cli.train import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("keep me")
    cfg = experiment(tmp_path, tmp_path / "run", max_steps=1)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "exp.yaml")], command="train") == 2
    err = capsys.readouterr().err
    assert "already holds files of another run" in err and "--overwrite" in err
    assert (tmp_path / "run" / "old.txt").read_text() == "keep me"


# -------------------------------------------------------------------------------------------- shape

_OWNED = [REPO / "ximgctx" / "_distributed.py", REPO / "ximgctx" / "hitl" / "simulate.py"] + sorted(
    (REPO / "ximgctx" / "training").glob("*.py")
)


@pytest.mark.parametrize("path", _OWNED, ids=lambda p: p.name)
def test_no_function_over_80_lines_and_no_module_over_600(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= 600, f"{path.name}: {len(source.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, f"{path.name}: {long}"


def test_evaluation_never_imports_training() -> None:
    for path in (REPO / "ximgctx" / "evaluation").glob("*.py"):
        assert "ximgctx.training" not in path.read_text(), path.name
