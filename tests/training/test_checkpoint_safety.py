"""Checkpoints hold no pickle that runs: every pickle-capable file of a checkpoint is planted with a
``__reduce__`` payload (which would write a marker file) and resume must refuse it, with the marker never
created; what a checkpoint holds, sealed as an artifact; exact resume under torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.training.test_training import REPO, experiment, weights
from ximgctx import load_posts, write_posts
from ximgctx._artifacts import artifact_kind, seal_folder, verify_artifact
from ximgctx.contextbench import generate
from ximgctx.governance import govern
from ximgctx.training import CheckpointError, CheckpointManager, train
from ximgctx.training.state import TrainState

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny governed ContextBench of tests/training/test_training.py."""
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=3, n_train=48, n_val=13, n_test=8, n_compositional=8, image_size=32)
    for split in ("train", "val"):
        write_posts(govern(load_posts(root / f"{split}.jsonl")).posts, root / f"governed_{split}.jsonl")
    return root


class _Payload:
    """Unpickling this writes ``marker``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def checkpoint(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(experiment(bench, out, max_steps=3, save_every=3, eval_every=100), stop_after=2)
    return out / "checkpoints" / "step-00000002"


def test_a_checkpoint_is_a_sealed_artifact_without_pickles(checkpoint: Path) -> None:
    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == sorted(
        [
            "COMPLETE",
            "config.yaml",
            "manifest.json",
            "model.safetensors",
            "optimizer.pt",
            "rng-rank0.json",
            "rng-rank0.safetensors",
            "scheduler.json",
            "trainer_state.json",
        ]
    )
    manifest = verify_artifact(checkpoint, "checkpoint")
    assert set(manifest.files) == set(names) - {"manifest.json"} and manifest.meta == {"step": 2}
    # the optimizer file loads with the restricted unpickler; the scheduler and the RNG are plain JSON
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert set(state) == {"state", "param_groups"}
    assert json.loads((checkpoint / "scheduler.json").read_text())["last_epoch"] == 2
    rng = json.loads((checkpoint / "rng-rank0.json").read_text())
    assert len(rng["python"]["state"]) == 625 and len(rng["numpy"]["keys"]) == 624
    # trainer_state.json holds exactly the TrainState fields
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    assert set(saved) == set(vars(TrainState())) and saved["step"] == 2


def _plant(checkpoint: Path, dest: Path, name: str, payload: bytes, *, reseal: bool = True) -> Path:
    """A copy of the checkpoint with ``name`` replaced (or added) by ``payload``, resealed by the attacker."""
    shutil.copytree(checkpoint, dest)
    (dest / name).write_bytes(payload)
    if reseal:
        (dest / "manifest.json").unlink()
        seal_folder(dest, "checkpoint", meta={"step": 2})
    return dest


PLANTED = [
    "optimizer.pt",  # the one pickle-capable file a checkpoint holds (torch.save zip)
    "custom_checkpoint_0.pkl",  # accelerate's register_for_checkpointing (the LR scheduler)
    "random_states_0.pkl",  # accelerate's RNG states
    "optimizer.bin",
    "scheduler.bin",
    "sampler.bin",
    "scaler.pt",
    "pytorch_model.bin",
    "dl_state_dict.bin",
]


@pytest.mark.parametrize("name", PLANTED)
@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_resume_refuses_pickle_payloads_and_runs_none(
    bench: Path,
    checkpoint: Path,
    tmp_path: Path,
    name: str,
    fmt: str,
) -> None:
    marker = tmp_path / "MARKER"
    obj = {"state": {0: _Payload(marker)}, "param_groups": []}
    if fmt == "torch.save":
        torch.save(obj, tmp_path / "blob")
        payload = (tmp_path / "blob").read_bytes()
    else:
        payload = pickle.dumps(obj)
    planted = _plant(checkpoint, tmp_path / "planted", name, payload)
    with pytest.raises(CheckpointError) as info:
        train(experiment(bench, tmp_path / "out", max_steps=3, save_every=3, eval_every=100), resume=planted)
    if name == "optimizer.pt":
        assert f"{planted / name}: refused by torch.load(weights_only=True)" in str(info.value)
    else:
        assert f"{planted / name}: not a file an ximgctx checkpoint holds" in str(info.value)
    assert not marker.exists(), "a payload in the checkpoint ran"


def test_an_altered_file_that_is_not_resealed_is_refused_by_the_manifest(
    bench: Path,
    checkpoint: Path,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "MARKER"
    torch.save({"state": {0: _Payload(marker)}}, tmp_path / "blob")
    planted = _plant(
        checkpoint, tmp_path / "planted", "optimizer.pt", (tmp_path / "blob").read_bytes(), reseal=False
    )
    with pytest.raises(CheckpointError, match="optimizer.pt.*(bytes|SHA-256)"):
        train(experiment(bench, tmp_path / "out", max_steps=3, save_every=3, eval_every=100), resume=planted)
    assert not marker.exists()


def test_an_old_accelerate_checkpoint_is_refused_naming_its_pickle(checkpoint: Path, tmp_path: Path) -> None:
    old = tmp_path / "checkpoints" / "step-00000002"
    old.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "COMPLETE"):
        (old / name).write_bytes(b"x")
    ckpt = CheckpointManager(tmp_path / "checkpoints")
    with pytest.raises(
        CheckpointError, match=r"random_states_0\.pkl: not a file an ximgctx checkpoint holds \(a pickle"
    ):
        ckpt.verify(ckpt.resolve("latest"))


def test_a_scheduler_state_with_foreign_keys_is_refused(
    bench: Path, checkpoint: Path, tmp_path: Path
) -> None:
    state = json.loads((checkpoint / "scheduler.json").read_text())
    state["optimizer"] = {
        "param_groups": []
    }  # would replace the scheduler's optimizer through __dict__.update
    planted = _plant(checkpoint, tmp_path / "planted", "scheduler.json", json.dumps(state).encode())
    with pytest.raises(CheckpointError, match="scheduler state keys"):
        train(experiment(bench, tmp_path / "out", max_steps=3, save_every=3, eval_every=100), resume=planted)


def test_checkpoint_kind_is_checked(checkpoint: Path) -> None:
    assert artifact_kind(checkpoint) == "checkpoint"


# ---------------------------------------------------------------------------------------- distributed

_RESUME_DRIVER = textwrap.dedent("""
    import sys
    import torch
    from ximgctx.training import train

    exp, stop, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    train(exp, stop_after=stop or None, resume=resume or None)
""")


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_resume_exactly(bench: Path, tmp_path: Path) -> None:
    """2 processes: 4 steps straight, or 2, stop, resume: the same weights, bit for bit (dropout on, so each
    rank's RNG state must come back from its own file)."""
    import yaml

    driver = tmp_path / "driver.py"
    driver.write_text(_RESUME_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    for name in ("straight", "resumed"):
        cfg = experiment(bench, tmp_path / name, batch_size=4, max_steps=4, eval_every=100, save_every=2)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    runs = [("straight", "0", ""), ("resumed", "2", ""), ("resumed", "0", "latest")]
    for name, stop, resume in runs:
        cmd = [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(driver),
            str(tmp_path / f"{name}.yaml"),
            stop,
            resume,
        ]
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = tmp_path / "resumed" / "checkpoints"
    assert {p.name for p in (resumed / "step-00000002").iterdir()} >= {"rng-rank0.json", "rng-rank1.json"}
    a = weights(tmp_path / "straight" / "checkpoints" / "step-00000004")
    b = weights(resumed / "step-00000004")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "2-process resume differs from the uninterrupted run"
