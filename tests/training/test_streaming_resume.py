"""Training on a shard folder by streaming: exact resume mid-epoch (after the first epoch) with DataLoader
workers, in one process and (marked ``distributed``) under ``torchrun --nproc_per_node 2``; the JSONL path
unchanged.

Tiny everything: a 48-post ContextBench written as 7 shards of 7 (the last 6: uneven on purpose), the tiny
ViT, batches of 4, 2 DataLoader workers per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ximgctx import load_posts, write_posts
from ximgctx.contextbench import generate
from ximgctx.data.shard_write import write_shards
from ximgctx.governance import govern
from ximgctx.training import CheckpointError, CheckpointManager, train

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Governed ContextBench posts (train 48, val 13) as a Parquet shard folder ``train/`` + ``val.jsonl``."""
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=3, n_train=48, n_val=13, n_test=8, n_compositional=8, image_size=32)
    train_posts = govern(load_posts(root / "train.jsonl")).posts
    write_posts(train_posts, root / "governed_train.jsonl")
    write_posts(govern(load_posts(root / "val.jsonl")).posts, root / "governed_val.jsonl")
    report = write_shards(train_posts, root / "shards", posts_per_shard=7)
    assert report.posts == 48 and [s["count"] for s in report.shards] == [7] * 6 + [6]
    return root


def experiment(root: Path, out: Path, **train_cfg: object) -> dict:
    """Dropout on, so that resuming must restore the RNG to be exact."""
    return {
        "model": {
            "tasks": "contextbench",
            "encoder": {"arch": "ximgctx-tiny"},
            "fusion": {"kind": "attention", "hidden_dim": 32, "heads": 2, "layers": 1, "dropout": 0.2},
            "lora": {"r": 2, "alpha": 4.0, "targets": ["attn"]},
        },
        "data": {"train": str(root / "shards"), "val": str(root / "governed_val.jsonl"), "shuffle_buffer": 5},
        "train": {
            "output_dir": str(out),
            "batch_size": 4,
            "num_workers": 2,
            "eval_every": 100,
            "eval_batch_size": 8,
            "progress_bar": False,
            "tensorboard": False,
            "log_samples": True,
            "log_every": 2,
            "optim": {"lr": {"lora": 3e-3, "fusion": 3e-3, "heads": 3e-3}, "warmup_steps": 2},
            **train_cfg,
        },
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def samples(out: Path, rank: int = 0) -> list[tuple[int, list[str]]]:
    lines = (out / f"samples-rank{rank}.jsonl").read_text().splitlines()
    return [(json.loads(line)["epoch"], json.loads(line)["ids"]) for line in lines]


def test_resume_one_process_two_workers_is_bit_identical(shards: Path, tmp_path: Path) -> None:
    # 48 posts in 2 slots of 24 -> 6 batches of 4 per worker, 12 steps per epoch. Stop after step 15: three
    # batches into epoch 1, so the batch that comes next is the *second* worker's.
    cfg = {"max_steps": 18, "save_every": 5}
    straight = train(experiment(shards, tmp_path / "straight", **cfg))
    first = train(experiment(shards, tmp_path / "resumed", **cfg), stop_after=15)
    assert first.stopped_early and first.steps == 15
    state = json.loads(
        (CheckpointManager(tmp_path / "resumed" / "checkpoints").latest() / "trainer_state.json").read_text()
    )
    assert state["epoch"] == 1 and state["samples_in_epoch"] == 12
    assert state["stream"] == {
        "world_size": 1,
        "workers": 2,
        "ranks": [{"consumed": [8, 4], "next_worker": 1}],
    }
    second = train(experiment(shards, tmp_path / "resumed", **cfg), resume="latest")
    assert straight.steps == second.steps == 18

    a = weights(tmp_path / "straight" / "checkpoints" / "step-00000018")
    b = weights(tmp_path / "resumed" / "checkpoints" / "step-00000018")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    seq = samples(tmp_path / "straight")
    assert seq == samples(tmp_path / "resumed")
    # the stream really streamed: each epoch is every post once (48, none dropped: 24 = 6 x 4 per worker),
    # in another order in epoch 1
    epoch0 = [i for e, ids in seq if e == 0 for i in ids]
    epoch1 = [i for e, ids in seq if e == 1 for i in ids]
    ids = {p.id for p in load_posts(shards / "governed_train.jsonl")}
    assert len(epoch0) == 48 and set(epoch0) == ids and epoch0 != sorted(epoch0)
    assert epoch1[:24] != epoch0[:24]
    assert straight.data["train_posts"] == 48

    # another worker count cannot continue that epoch: refused, naming the layout
    with pytest.raises(CheckpointError, match="DataLoader workers"):
        train(
            experiment(shards, tmp_path / "other", **cfg, num_workers=1),
            resume=CheckpointManager(tmp_path / "resumed" / "checkpoints").complete()[0],
        )


def test_jsonl_training_is_not_streamed_and_unchanged(shards: Path, tmp_path: Path) -> None:
    """The in-memory path stays: a JSONL manifest trains through Accelerate's sampler as before (its order
    is the map-style one, whole-dataset shuffled), and has no stream position in its checkpoints."""
    cfg = experiment(shards, tmp_path / "jsonl", max_steps=3, save_every=3, num_workers=0)
    cfg["data"]["train"] = str(shards / "governed_train.jsonl")
    result = train(cfg)
    state = json.loads(
        (tmp_path / "jsonl" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text()
    )
    assert state["stream"] is None and result.data["train_posts"] == 48
    assert result.data["unlabeled"]  # counted up front, as before (a stream cannot)


_DRIVER = textwrap.dedent("""
    import sys
    import torch
    from ximgctx.training import train

    exp, stop, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    train(exp, stop_after=stop or None, resume=resume or None)
""")


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_two_workers_resume_exactly(shards: Path, tmp_path: Path) -> None:
    """2 processes x 2 workers on 7 uneven shards: 4 slots of 12 -> 3 batches per worker, 6 steps per epoch on
    both ranks (no rank waits in a collective the other never reaches: bounded by the timeout). Stop after
    step 9 (three batches into epoch 1), resume: the same sample ids on each rank and the same weights."""
    import yaml

    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    for name in ("straight", "resumed"):
        cfg = experiment(shards, tmp_path / name, max_steps=10, save_every=5)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    for name, stop, resume in [("straight", "0", ""), ("resumed", "9", ""), ("resumed", "0", "latest")]:
        cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(driver), str(tmp_path / f"{name}.yaml")]
        proc = subprocess.run(
            [*cmd, stop, resume], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = tmp_path / "resumed" / "checkpoints"
    state = json.loads((resumed / "step-00000009" / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["stream"]["world_size"] == 2 and len(state["stream"]["ranks"]) == 2
    a = weights(tmp_path / "straight" / "checkpoints" / "step-00000010")
    b = weights(resumed / "step-00000010")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "2x2 resume differs from the uninterrupted run"
    everyone: list[str] = []
    for rank in (0, 1):
        seq = samples(tmp_path / "straight", rank)
        assert seq == samples(tmp_path / "resumed", rank), f"rank {rank}: another sample sequence"
        assert len(seq) == 10
        everyone += [i for e, ids in seq if e == 0 for i in ids]
    assert len(everyone) == len(set(everyone)) == 48  # epoch 0 over both ranks: each post exactly once


def test_ximgctx_train_command_streams_a_shard_folder(shards: Path, tmp_path: Path) -> None:
    """``ximgctx train --config X data.train=SHARDS``: the command line takes the streamed path too."""
    import yaml

    from ximgctx.cli.train import main

    cfg = experiment(shards, tmp_path / "cli", max_steps=2, save_every=2, num_workers=0)
    cfg["data"]["train"] = str(shards / "governed_train.jsonl")  # the file says JSONL; the override streams
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    assert (
        main(["--config", str(tmp_path / "exp.yaml"), f"data.train={shards / 'shards'}"], command="train")
        == 0
    )
    state = json.loads(
        (tmp_path / "cli" / "checkpoints" / "step-00000002" / "trainer_state.json").read_text()
    )
    assert state["stream"]["workers"] == 1 and state["stream"]["ranks"][0]["consumed"] == [8]
    result = json.loads((tmp_path / "cli" / "train_result.json").read_text())
    assert result["data"]["train_posts"] == 48 and result["steps"] == 2
    # the model says who trained it: every author of the whole streamed folder, not just the first batches
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE, author_digests_of
    from ximgctx.governance.keys import load_key

    saved = sorted((tmp_path / "cli").rglob(MODEL_AUTHORS_FILE))
    expected = author_digests_of(load_posts(shards / "governed_train.jsonl"), load_key()[0])
    assert saved and len(expected) > 48
    for path in saved:  # every model the run saved
        assert set(json.loads(path.read_text())["digests"]) == expected, path


def test_an_ungoverned_shard_folder_is_refused_before_training(shards: Path, tmp_path: Path) -> None:
    from ximgctx.governance import UngovernedDataError

    raw = load_posts(shards / "train.jsonl")  # never governed
    write_shards(raw, tmp_path / "raw_shards", posts_per_shard=16)
    cfg = experiment(shards, tmp_path / "out", max_steps=2, num_workers=0)
    cfg["data"]["train"] = str(tmp_path / "raw_shards")
    with pytest.raises(UngovernedDataError, match="governance"):
        train(cfg)
    assert not (tmp_path / "out" / "checkpoints").exists()
