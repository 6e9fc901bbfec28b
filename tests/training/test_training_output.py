"""Training output folders never destroy data: a used output_dir is refused unless --resume or --overwrite,
--resume refuses another config (naming each key), one run at a time per folder (a lock, tested with two
processes), a full disk is one OutputError with the temporary checkpoint removed, the pretrained-encoder
export is a verified artifact, and the data report counts every problem once over the whole run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.training.test_training import REPO, experiment, sample_ids
from ximgctx import load_posts, write_posts
from ximgctx._artifacts import artifact_kind
from ximgctx.contextbench import generate
from ximgctx.errors import ArtifactError, OutputError
from ximgctx.governance import govern
from ximgctx.training import CheckpointError, CheckpointManager, load_pretrained_export, pretrain, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny governed ContextBench of tests/training/test_training.py."""
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=3, n_train=48, n_val=13, n_test=8, n_compositional=8, image_size=32)
    for split in ("train", "val"):
        write_posts(govern(load_posts(root / f"{split}.jsonl")).posts, root / f"governed_{split}.jsonl")
    return root


def _quick(bench: Path, out: Path, **train_cfg: object) -> dict:
    return experiment(bench, out, **{"max_steps": 2, "save_every": 2, "eval_every": 100, **train_cfg})


# ------------------------------------------------------------------------------------- used output_dir


def test_a_fresh_run_into_a_used_output_dir_is_refused_and_overwrite_replaces_it(
    bench: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(_quick(bench, out))
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(OutputError, match=r"--resume latest.*--overwrite"):
        train(_quick(bench, out))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # nothing touched
    # a folder of unrelated files is refused too, and keeps them
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputError, match="thesis.txt"):
        train(_quick(bench, other))
    assert (other / "thesis.txt").read_text() == "years of work"
    # --overwrite: the old run's checkpoints go, so --resume latest can never continue the other run
    (out / "checkpoints" / "step-00000099").mkdir()
    (out / "checkpoints" / "step-00000099" / "COMPLETE").write_text("{}")
    train(_quick(bench, out, max_steps=1, save_every=1), overwrite=True)
    assert [p.name for p in CheckpointManager(out / "checkpoints").complete()] == ["step-00000001"]


def test_overwrite_never_empties_a_folder_holding_the_training_data(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "data_and_run"
    out.mkdir()
    posts = out / "train.jsonl"
    posts.write_bytes((bench / "governed_train.jsonl").read_bytes())
    cfg = _quick(bench, out)
    cfg["data"]["train"] = str(posts)
    with pytest.raises(OutputError, match="is also an input"):
        train(cfg, overwrite=True)
    assert posts.is_file()


def test_resume_refuses_another_config_naming_each_key(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_quick(bench, out, max_steps=4), stop_after=2)
    changed = _quick(bench, out, max_steps=6, log_every=1)  # may differ: how long, how often
    changed["model"]["fusion"]["hidden_dim"] = 16
    changed["train"]["optim"]["lr"]["heads"] = 1e-2
    saved_config = (out / "config.yaml").read_text()
    with pytest.raises(CheckpointError) as info:
        train(changed, resume="latest")
    assert (out / "config.yaml").read_text() == saved_config  # the refused config is not written
    message = str(info.value)
    assert "model.fusion.hidden_dim (checkpoint: 32, now: 16)" in message
    assert "train.optim.lr.heads (checkpoint: 0.003, now: 0.01)" in message
    assert "train.max_steps" not in message and "train.log_every" not in message
    # the same config with a longer schedule and another log cadence resumes
    result = train(_quick(bench, out, max_steps=6, log_every=1), resume="latest")
    assert result.steps == 6


_HOLDER = """
import sys, time
from ximgctx.training import train
import yaml
train(yaml.safe_load(open(sys.argv[1])))
"""


@pytest.mark.slow
def test_a_second_run_on_a_locked_output_dir_fails_at_once_naming_the_first_pid(
    bench: Path, tmp_path: Path
) -> None:
    """Two processes: a long run holds the folder; a second run on it fails at once, naming its pid."""
    out = tmp_path / "run"
    cfg = _quick(bench, out, max_steps=100000, save_every=100000)
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "holder.py").write_text(_HOLDER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, str(tmp_path / "holder.py"), str(tmp_path / "long.yaml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        lock = tmp_path / ".run.lock"
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert lock.read_text().strip() == str(first.pid)
        with pytest.raises(OutputError, match=rf"in use by another ximgctx process \(pid {first.pid}\)"):
            train(_quick(bench, out), resume="latest")
        assert first.poll() is None  # the second run did not wait for the first one
    finally:
        first.kill()
        first.wait()


# ----------------------------------------------------------------------------------------- full disk


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_a_full_disk_is_one_output_error_and_the_temporary_checkpoint_is_removed(
    bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    import ximgctx.training.checkpoint as checkpoint

    out = tmp_path / "run"
    train(_quick(bench, out, max_steps=4), stop_after=2)
    real = checkpoint.save_file

    def failing(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        if filename.endswith("model.safetensors"):
            raise OSError(code, os.strerror(code), filename)
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", failing)
    with pytest.raises(OutputError, match=rf"{out / 'checkpoints'}: cannot write the output: .*{reason}"):
        train(_quick(bench, out, max_steps=4), resume="latest")
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000002"]  # no .tmp-step-* left; the older checkpoint is kept


# ------------------------------------------------------------------------------------ pretrained export


def test_the_pretrained_encoder_export_is_a_verified_artifact(bench: Path, tmp_path: Path) -> None:
    res = pretrain(
        {
            "encoder": {"arch": "ximgctx-tiny"},
            "train": {
                "output_dir": str(tmp_path / "pre"),
                "batch_size": 8,
                "max_steps": 2,
                "progress_bar": False,
                "tensorboard": False,
                "save_every": 2,
            },
        },
        train_posts=load_posts(bench / "governed_train.jsonl"),
    )
    assert artifact_kind(res.model_dir) == "pretrained-encoder"
    state, encoder = load_pretrained_export(res.model_dir)
    on_disk = load_file(str(res.model_dir / "open_clip_model.safetensors"))
    assert state.keys() == on_disk.keys() and all(torch.equal(state[k], on_disk[k]) for k in state)
    assert encoder["arch"] == "ximgctx-tiny"
    weights = res.model_dir / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="open_clip_model.safetensors"):
        load_pretrained_export(weights)


# ----------------------------------------------------------------------------------------- data report


def test_every_problem_is_counted_once_over_the_whole_run_and_across_a_resume(
    bench: Path, tmp_path: Path
) -> None:
    """20 posts with a problem each, batches of 8 (4 posts left out of each epoch by drop_last), 2 epochs: the
    report counts every post that trained, once, not only epoch 0's 16."""
    posts = load_posts(bench / "governed_train.jsonl")[:20]
    for p in posts:
        p.labels["meaning"] = "sarcastic"  # not a meaning label: one problem per post
    write_posts(posts, tmp_path / "messy.jsonl")
    results = {}
    for name, stop in (("straight", None), ("resumed", 2)):
        cfg = _quick(bench, tmp_path / name, max_steps=4, save_every=2)
        cfg["data"]["train"] = str(tmp_path / "messy.jsonl")
        cfg["data"]["val"] = None
        cfg["data"]["invalid_labels"] = "drop"
        results[name] = train(cfg, stop_after=stop)
        if stop:
            results[name] = train(cfg, resume="latest")
    seen = {pid for ids in sample_ids(tmp_path / "straight") for pid in ids}
    assert len(seen) > 16  # the second epoch reached posts the first one left out
    for name in ("straight", "resumed"):
        assert results[name].data["problems"] == {"labels.meaning: invalid_label": len(seen)}, name
    saved = json.loads(
        (tmp_path / "resumed" / "checkpoints" / "step-00000004" / "trainer_state.json").read_text()
    )
    assert sorted(saved["problem_posts"]) == sorted(seen)


def test_overwrite_never_deletes_the_checkpoint_it_is_asked_to_resume(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_quick(bench, out, max_steps=4), stop_after=2)
    for resume in ("latest", out / "checkpoints" / "step-00000002"):
        with pytest.raises(OutputError, match="--overwrite would delete the checkpoint"):
            train(_quick(bench, out, max_steps=4), resume=resume, overwrite=True)
    assert CheckpointManager(out / "checkpoints").latest().name == "step-00000002"
