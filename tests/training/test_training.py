"""Training: exact resume, NaN steps, checkpoints that are complete or invisible, messy data, governance,
and (marked ``distributed``) torchrun with 2 CPU processes against one process with the same global batch.

Tiny everything: a 48-post ContextBench, the tiny ViT, batches of 8, a few steps per run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ximgctx import ContextModel, load_posts, write_posts
from ximgctx.contextbench import generate
from ximgctx.data.processor import LabelError
from ximgctx.governance import UngovernedDataError, govern
from ximgctx.models.context_model import LossOutput
from ximgctx.training import (
    CheckpointError,
    CheckpointManager,
    NonFiniteLossError,
    OptimConfig,
    load_experiment,
    pretrain,
    train,
)
from ximgctx.training.optim import WarmupCosine, build_optimizer

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ContextBench, governed: train (48), val (13: an uneven count on purpose)."""
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=3, n_train=48, n_val=13, n_test=8, n_compositional=8, image_size=32)
    for split in ("train", "val"):
        write_posts(govern(load_posts(root / f"{split}.jsonl")).posts, root / f"governed_{split}.jsonl")
    return root


def experiment(bench: Path, out: Path, **train: object) -> dict:
    """A tiny experiment: dropout on, so that resuming must restore the RNG to be exact."""
    return {
        "model": {
            "tasks": "contextbench",
            "encoder": {"arch": "ximgctx-tiny"},
            "fusion": {
                "kind": "attention",
                "hidden_dim": 32,
                "heads": 2,
                "layers": 1,
                "dropout": 0.2,
                "modality_dropout": 0.2,
            },
            "lora": {"r": 2, "alpha": 4.0, "targets": ["attn"]},
        },
        "data": {"train": str(bench / "governed_train.jsonl"), "val": str(bench / "governed_val.jsonl")},
        "train": {
            "output_dir": str(out),
            "batch_size": 8,
            "max_steps": 10,
            "eval_every": 4,
            "save_every": 3,
            "eval_batch_size": 8,
            "progress_bar": False,
            "tensorboard": False,
            "log_samples": True,
            "metric_for_best": "intent/accuracy",
            "log_every": 2,
            "optim": {"lr": {"lora": 3e-3, "fusion": 3e-3, "heads": 3e-3}, "warmup_steps": 2},
            **train,
        },
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def sample_ids(out: Path) -> list[list[str]]:
    lines = (out / "samples-rank0.jsonl").read_text().splitlines()
    return [json.loads(line)["ids"] for line in lines]


# ------------------------------------------------------------------------------------------- resume


def test_resume_mid_epoch_after_first_epoch_is_bit_identical(bench: Path, tmp_path: Path) -> None:
    # 48 posts / (batch 4 x accumulate 2) = 6 optimizer steps per epoch; 10 steps straight, or 8, stop,
    # resume. Step 8 is in the middle of the second epoch, after a validation (step 4, 8) and a checkpoint
    # (3, 6).
    cfg = {"batch_size": 4, "grad_accum_steps": 2}
    straight = train(experiment(bench, tmp_path / "straight", **cfg))
    first = train(experiment(bench, tmp_path / "resumed", **cfg), stop_after=8)
    assert first.stopped_early and first.steps == 8
    ckpt = CheckpointManager(tmp_path / "resumed" / "checkpoints")
    assert ckpt.latest().name == "step-00000008"
    state = json.loads((ckpt.latest() / "trainer_state.json").read_text())
    assert (
        state["epoch"] == 1 and state["samples_in_epoch"] == 2 * 8 * 1
    )  # two accumulated steps into epoch 1
    second = train(experiment(bench, tmp_path / "resumed", **cfg), resume="latest")
    assert straight.steps == second.steps == 10

    a = weights(tmp_path / "straight" / "checkpoints" / "step-00000010")
    b = weights(tmp_path / "resumed" / "checkpoints" / "step-00000010")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert sample_ids(tmp_path / "straight") == sample_ids(tmp_path / "resumed")
    assert len(sample_ids(tmp_path / "straight")) == 20  # 10 steps x 2 micro-batches
    # the validation history and the best model agree too
    assert [h["step"] for h in straight.history] == [h["step"] for h in second.history] == [4, 8, 10]
    assert straight.history[-1]["loss"] == second.history[-1]["loss"]
    # and the resolved config sits beside each checkpoint
    assert (
        load_experiment(
            tmp_path / "resumed" / "checkpoints" / "step-00000010" / "config.yaml"
        ).train.max_steps
        == 10
    )


def test_resume_without_rng_restore_would_differ(bench: Path, tmp_path: Path) -> None:
    """Guard for the test above: with dropout on, a different RNG stream gives different weights."""
    a = train(experiment(bench, tmp_path / "a", max_steps=3, save_every=3, eval_every=3, seed=0))
    b = train(experiment(bench, tmp_path / "b", max_steps=3, save_every=3, eval_every=3, seed=1))
    wa, wb = (
        weights(a.output_dir / "checkpoints" / "step-00000003"),
        weights(b.output_dir / "checkpoints" / "step-00000003"),
    )
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------------------------ non-finite steps


def _nan_at(calls: set[int]):
    original = ContextModel.loss
    counter = {"n": 0}

    def loss(self: ContextModel, output, batch, **kwargs) -> LossOutput:  # noqa: ANN001
        out = original(self, output, batch, **kwargs)
        counter["n"] += 1
        if counter["n"] in calls:
            out.total = out.total * float("nan")
        return out

    return loss


def test_nan_loss_skips_the_step_and_leaves_weights_unchanged(
    bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = {"max_steps": 6, "save_every": 100, "eval_every": 100}
    before = train(experiment(bench, tmp_path / "clean", **cfg), stop_after=2)
    monkeypatch.setattr(ContextModel, "loss", _nan_at({3}))  # the third training batch = step 3
    after = train(experiment(bench, tmp_path / "nan", **cfg), stop_after=3)
    w2 = weights(before.output_dir / "checkpoints" / "step-00000002")
    w3 = weights(after.output_dir / "checkpoints" / "step-00000003")
    assert all(torch.equal(w2[k], w3[k]) for k in w2), "a NaN step changed the weights"
    assert after.skipped_steps == 1
    state = json.loads(
        (after.output_dir / "checkpoints" / "step-00000003" / "trainer_state.json").read_text()
    )
    assert state["skipped_steps"] == 1 and state["nonfinite_run"] == 1


def test_repeated_nan_losses_abort(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ContextModel, "loss", _nan_at(set(range(1, 100))))
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        train(
            experiment(
                bench, tmp_path / "run", max_steps=6, max_nonfinite_steps=3, save_every=100, eval_every=100
            )
        )


# ---------------------------------------------------------------------------------------- checkpoints


class _FakeAccelerator:
    """Enough of Accelerator for CheckpointManager: one process; dies while gathering the weights when
    told."""

    is_main_process = True
    process_index = 0
    num_processes = 1
    device = torch.device("cpu")

    def __init__(self, die: bool = False) -> None:
        self.die = die

    def wait_for_everyone(self) -> None:
        pass

    def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        if self.die:  # the RNG files are written by then: a half-written folder
            raise KeyboardInterrupt("killed while writing")
        return model.state_dict()


def _save(ckpt: CheckpointManager, step: int, config: dict, die: bool = False) -> Path:
    from ximgctx.training.state import TrainState

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(1, 10, 0.0))
    return ckpt.save(
        _FakeAccelerator(die),
        step,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        state=TrainState(step=step),
        config=config,
    )


def test_interrupted_checkpoint_never_becomes_latest(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path / "checkpoints", keep_last=2)
    first = _save(ckpt, 10, {"a": 1})
    assert ckpt.latest() == first and (first / "COMPLETE").is_file() and (first / "config.yaml").is_file()
    with pytest.raises(KeyboardInterrupt):
        _save(ckpt, 20, {"a": 1}, die=True)
    assert (tmp_path / "checkpoints" / ".tmp-step-00000020").is_dir()  # the half-written one is there...
    assert ckpt.latest() == first  # ...but invisible
    assert ckpt.resolve("latest") == first
    # a step-* folder without its marker (say, copied half-way) is not a checkpoint either
    fake = tmp_path / "checkpoints" / "step-00000030"
    shutil.copytree(first, fake)
    (fake / "COMPLETE").unlink()
    assert ckpt.latest() == first
    with pytest.raises(CheckpointError, match="incomplete"):
        ckpt.resolve(fake)
    ckpt.clean_partial()
    assert not (tmp_path / "checkpoints" / ".tmp-step-00000020").exists()
    # old ones go only after a newer one is complete: keep_last=2
    _save(ckpt, 40, {})
    _save(ckpt, 50, {})
    assert [p.name for p in ckpt.complete()] == ["step-00000040", "step-00000050"]


def test_resume_latest_without_checkpoint_is_a_clear_error(bench: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        train(experiment(bench, tmp_path / "none"), resume="latest")


# ----------------------------------------------------------------------------------------- messy data


def test_training_on_messy_data_runs_to_the_end_and_reports_what_it_skipped(
    bench: Path, tmp_path: Path
) -> None:
    posts = load_posts(bench / "governed_train.jsonl")[:24]
    corrupt = tmp_path / "truncated.png"
    corrupt.write_bytes(Path(posts[0].image).read_bytes()[:200])  # a PNG cut short
    posts[0].image = str(corrupt)
    posts[1].image = str(tmp_path / "missing.png")
    for p in posts[2:8]:
        p.labels.pop("intent")  # unlabeled for intent: its loss is masked
    posts[8].labels["meaning"] = "sarcastic"  # not a meaning label
    write_posts(posts, tmp_path / "messy.jsonl")
    with open(tmp_path / "messy.jsonl", "a") as f:
        f.write('{"id": "broken", "text": \n')  # a malformed record
    cfg = experiment(bench, tmp_path / "run", max_steps=3, save_every=100, eval_every=100)
    cfg["data"]["train"] = str(tmp_path / "messy.jsonl")
    # a label outside its task's label set is an error by default, naming the post, the task and the label
    with pytest.raises(
        LabelError,
        match=rf"messy.jsonl: 1 label\(s\) .*meaning 1.*post '{posts[8].id}': "
        r"unknown label 'sarcastic' for task 'meaning'.*data.invalid_labels=drop",
    ):
        train(cfg)
    cfg["data"]["invalid_labels"] = "drop"
    result = train(cfg)
    assert result.steps == 3 and result.skipped_steps == 0
    data = result.data
    assert data["skipped_records"]["train"] == 1 and data["train_posts"] == 24
    assert data["unlabeled"]["intent"] == 6
    assert data["problems"]["image: truncated"] == 1 and data["problems"]["image: missing"] == 1
    assert data["problems"]["labels.meaning: invalid_label"] == 1
    assert data["dropped_labels"] == {"train": {"meaning": 1}}
    card = (result.model_dir / "README.md").read_text()
    assert "image: truncated" in card and '"unlabeled"' in card


# ----------------------------------------------------------------------------------------- governance


def test_ungoverned_data_is_refused_unless_allowed(bench: Path, tmp_path: Path) -> None:
    cfg = experiment(bench, tmp_path / "run", max_steps=1, save_every=100, eval_every=100)
    cfg["data"] = {"train": str(bench / "train.jsonl"), "val": None}
    with pytest.raises(UngovernedDataError, match="ximgctx govern"):
        train(cfg)
    cfg["data"]["allow_ungoverned"] = True
    result = train(cfg)
    assert '"allowed_ungoverned": true' in (result.model_dir / "README.md").read_text()


def test_a_trained_model_says_which_opted_out_authors_trained_it(
    bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Training writes the keyed author set of its training posts into the model it saves, so `purge
    --model` counts the opted-out authors whose words trained it (without naming anyone else)."""
    from ximgctx.cli import purge as purge_cli
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE
    from ximgctx.governance.keys import key_id

    key = "training-governance-key-0123456789"
    monkeypatch.setenv("XIMGCTX_GOVERNANCE_KEY", key)
    cfg = experiment(bench, tmp_path / "run", max_steps=1, save_every=100, eval_every=100)
    cfg["data"]["val"] = None
    result = train(cfg)
    assert result.model_dir is not None
    authors_file = result.model_dir / MODEL_AUTHORS_FILE
    record = json.loads(authors_file.read_text())
    trained = load_posts(bench / "governed_train.jsonl")
    post_author = trained[0].meta["author"]
    reply_author = next(r.author for p in trained for r in p.replies if r.author)
    val_only = {p.meta["author"] for p in load_posts(bench / "governed_val.jsonl")}
    val_only -= {p.meta["author"] for p in trained} | {r.author for p in trained for r in p.replies}
    assert record["key_id"] == key_id(key.encode()) and len(record["digests"]) > 48
    assert post_author not in authors_file.read_text() and key not in authors_file.read_text()
    opt_out = tmp_path / "opt_out.txt"
    opt_out.write_text(f"{post_author}\n@{reply_author.upper()}\n{sorted(val_only)[0]}\nnever-posted\n")
    assert purge_cli.main(["--opt-out", str(opt_out), "--model", str(result.model_dir)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["trained_on_opted_out_authors"] == 2 and line["retrain"] is True
    assert line["authors_in_model"] == len(record["digests"])


def test_cli_refuses_ungoverned_data_with_a_reason(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    from ximgctx.cli.train import main

    cfg = experiment(bench, tmp_path / "run", max_steps=1)
    cfg["data"] = {"train": str(bench / "train.jsonl")}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "exp.yaml")], command="train") == 2
    err = capsys.readouterr().err
    assert "have not passed through data governance" in err and "--allow-ungoverned" in err
    assert main(["--config", str(tmp_path / "exp.yaml"), "train.bogus=1"], command="train") == 2
    assert "train.bogus" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- optimizer, LR


def test_optimizer_groups_and_warmup_cosine_schedule() -> None:
    from ximgctx.training.config import LearningRates

    p_lora, p_fusion, p_bias = (
        torch.nn.Parameter(torch.zeros(4, 4)),
        torch.nn.Parameter(torch.zeros(4, 4)),
        torch.nn.Parameter(torch.zeros(4)),
    )
    cfg = OptimConfig(lr=LearningRates(lora=1e-3, fusion=5e-4, heads=2e-4), weight_decay=0.1)
    opt = build_optimizer({"lora": [p_lora], "encoder": [], "fusion": [p_fusion, p_bias], "heads": []}, cfg)
    groups = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert groups == {"lora": (1e-3, 0.1), "fusion": (5e-4, 0.1), "fusion/no_decay": (5e-4, 0.0)}
    f = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    assert [round(f(s), 6) for s in (0, 3)] == [0.25, 1.0]
    assert f(4) == pytest.approx(1.0) and f(12) == pytest.approx(0.55) and f(20) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 25))


# ------------------------------------------------------------------------------------------ pretrain


def test_pretrain_writes_encoder_weights_fine_tuning_can_start_from(bench: Path, tmp_path: Path) -> None:
    res = pretrain(
        {
            "encoder": {"arch": "ximgctx-tiny"},
            "train": {
                "output_dir": str(tmp_path / "pre"),
                "batch_size": 8,
                "max_steps": 3,
                "progress_bar": False,
                "tensorboard": True,
                "save_every": 3,
                "optim": {"lr": {"encoder": 1e-3}},
            },
        },
        train_posts=load_posts(bench / "governed_train.jsonl"),
        val_posts=load_posts(bench / "governed_val.jsonl"),
    )
    weights_file = res.model_dir / "open_clip_model.safetensors"
    assert weights_file.is_file() and math.isfinite(res.best_metric)
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE, author_digests_of
    from ximgctx.governance.keys import load_key
    from ximgctx.purge import model_report

    # the export says who pretrained it (pairs only: posts with an image and a text), checked as purge does
    digests = json.loads((res.model_dir / MODEL_AUTHORS_FILE).read_text())["digests"]
    key, _ = load_key()  # no operator key in this test: the process's own
    assert set(digests) <= author_digests_of(load_posts(bench / "governed_train.jsonl"), key) and digests
    first = load_posts(bench / "governed_train.jsonl")[0].meta["author"]
    assert model_report(res.model_dir, {first, "never-posted"}, key, True)["authors_in_model"] == len(digests)
    assert any((tmp_path / "pre" / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    cfg = experiment(bench, tmp_path / "ft", max_steps=1, save_every=100, eval_every=100)
    cfg["model"]["encoder"]["pretrained"] = str(weights_file)
    ft = train(cfg)
    model = ContextModel.from_pretrained(ft.model_dir)
    pre = load_file(str(weights_file))
    # the frozen base weights of the fine-tuned model are the pretrained ones
    key = "visual.conv1.weight"
    assert torch.equal(model.encoder.clip.state_dict()[key], pre[key])


def test_pretraining_pairs_images_with_their_alt_text(bench: Path) -> None:
    """contrastive.texts=alt_text pairs each image with meta["alt_text"] and leaves out posts without one."""
    from ximgctx.config import DataConfig
    from ximgctx.training.pretrain import usable_pairs

    posts = load_posts(bench / "governed_train.jsonl")
    with_alt = [p for p in posts if p.meta.get("alt_text")]
    assert 0 < len(with_alt) < len(posts)  # ContextBench describes most images, not all
    pairs, dropped = usable_pairs(posts, "alt_text", DataConfig())
    assert [p.id for p in pairs] == [p.id for p in with_alt]
    assert [p.text for p in pairs] == [p.meta["alt_text"] for p in with_alt]
    assert dropped == {"no_image": 0, "no_alt_text": len(posts) - len(with_alt)}
    pairs, dropped = usable_pairs(posts, "text", DataConfig())
    assert [p.text for p in pairs] == [p.text for p in posts] and dropped["no_text"] == 0


def test_pretraining_pairs_accept_posts_holding_a_pil_image() -> None:
    """A post built in memory with a PIL image is checked like a file, not refused as a bad source type."""
    from PIL import Image

    from ximgctx.config import DataConfig
    from ximgctx.data.record import Post
    from ximgctx.training.pretrain import usable_pairs

    posts = [
        Post(id="held", image=Image.new("RGB", (32, 32), "red"), text="a red square"),
        Post(id="huge", image=Image.new("RGB", (1200, 1000)), text="too many pixels"),
    ]
    pairs, dropped = usable_pairs(posts, "text", DataConfig(image_max_pixels=1000 * 1000))
    assert [p.id for p in pairs] == ["held"]
    assert dropped == {"no_image": 0, "no_text": 0, "image_too_many_pixels": 1}


# ---------------------------------------------------------------------------------------- distributed

_DRIVER = textwrap.dedent('''
    """Run by the test under torchrun (2 processes) and as one process: train, pretrain, evaluate."""
    import json, sys
    import torch
    from accelerate import Accelerator
    from ximgctx import ContextModel, load_posts
    from ximgctx.evaluation import evaluate
    from ximgctx.training import pretrain, train
    from ximgctx._distributed import cpu_only_distributed

    exp, pre, val, out = sys.argv[1:5]
    torch.set_num_threads(1)
    res = train(exp)
    pres = pretrain(pre)
    acc = Accelerator(cpu=cpu_only_distributed())
    model = ContextModel.from_pretrained(res.model_dir)
    report = evaluate(model, val, keys=["image+text+replies", "image"], accelerator=acc, batch_size=4)
    if acc.is_main_process:
        json.dump({"model": str(res.model_dir), "encoder": str(pres.model_dir), "report": report,
                   "processes": acc.num_processes}, open(out, "w"))
''')


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process(bench: Path, tmp_path: Path) -> None:
    """2 processes x batch 4 == 1 process x batch 8: same weights (allclose) after training and after
    contrastive pretraining (ClipLoss gathers across processes); evaluation counts every post once.
    Some posts lack some tasks' labels, so the two processes hold different labeled counts: each task's loss
    must still be the mean over the global batch's labeled posts."""
    import yaml

    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    partial = load_posts(bench / "governed_train.jsonl")
    for i, post in enumerate(partial):
        for task, (every, at) in {"meaning": (3, 0), "intent": (4, 1), "objects": (5, 2)}.items():
            if i % every == at:
                post.labels.pop(task, None)
    write_posts(partial, tmp_path / "partial_train.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    results = {}
    for procs, batch in ((1, 8), (2, 4)):
        out = tmp_path / f"p{procs}"
        cfg = experiment(
            bench, out / "train", batch_size=batch, max_steps=4, eval_every=4, save_every=4, log_samples=False
        )
        cfg["model"]["fusion"].update(dropout=0.0, modality_dropout=0.0)  # no randomness tied to the process
        cfg["data"]["train"] = str(tmp_path / "partial_train.jsonl")
        # Adam divides by sqrt(v) + eps: a parameter whose gradient is zero in exact arithmetic (the key part
        # of an attention in-projection bias: softmax ignores it) would move by +-lr on rounding noise alone,
        # which differs between 1 and 2 processes. An eps far above that noise keeps such parameters still.
        cfg["train"]["optim"]["eps"] = 1e-6
        (tmp_path / f"exp{procs}.yaml").write_text(yaml.safe_dump(cfg))
        pre = {
            "encoder": {"arch": "ximgctx-tiny"},
            "data": {"train": cfg["data"]["train"]},
            "train": {
                "output_dir": str(out / "pre"),
                "batch_size": batch,
                "max_steps": 2,
                "save_every": 2,
                "progress_bar": False,
                "tensorboard": False,
                "optim": {"lr": {"encoder": 1e-3}, "eps": 1e-6},
            },
        }
        (tmp_path / f"pre{procs}.yaml").write_text(yaml.safe_dump(pre))
        args = [
            str(driver),
            str(tmp_path / f"exp{procs}.yaml"),
            str(tmp_path / f"pre{procs}.yaml"),
            str(bench / "governed_val.jsonl"),
            str(tmp_path / f"result{procs}.json"),
        ]
        cmd = (
            [sys.executable, *args]
            if procs == 1
            else [
                str(Path(sys.executable).with_name("torchrun")),
                "--standalone",
                "--nproc_per_node",
                "2",
                *args,
            ]
        )
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        ranks = "\n".join(line for line in proc.stderr.splitlines() if line.startswith("[rank"))
        assert proc.returncode == 0, (ranks or proc.stderr)[-4000:]
        results[procs] = json.loads((tmp_path / f"result{procs}.json").read_text())
    assert results[2]["processes"] == 2 and results[1]["processes"] == 1  # really 2 ranks, not 2 lone runs

    one, two = (weights(Path(results[n]["model"]).parent / "final") for n in (1, 2))
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5), f"{k} differs between 1 and 2 processes"
    e1 = load_file(str(Path(results[1]["encoder"]) / "open_clip_model.safetensors"))
    e2 = load_file(str(Path(results[2]["encoder"]) / "open_clip_model.safetensors"))
    for k in e1:
        assert torch.allclose(e1[k], e2[k], rtol=1e-4, atol=1e-5), (
            f"pretrain: {k} differs between 1 and 2 processes"
        )

    # 13 validation posts in batches of 4 over 2 processes: the padding posts must not be counted
    r1, r2 = results[1]["report"], results[2]["report"]
    for task in r1["tasks"]:
        assert r1["tasks"][task]["metrics"]["n"] == r2["tasks"][task]["metrics"]["n"] == 13
        for key in ("image+text+replies", "image"):
            a, b = (
                r1["tasks"][task]["modalities"][key]["accuracy"],
                r2["tasks"][task]["modalities"][key]["accuracy"],
            )
            assert a == pytest.approx(b, abs=1e-6)


def test_predict_refuses_a_gather_that_counts_a_post_twice(bench: Path) -> None:
    """predict() checks the gathered dataset positions: every post exactly once, or an error."""
    from torch.utils.data import DataLoader

    from ximgctx import ModelConfig
    from ximgctx.data.dataset import PostDataset
    from ximgctx.evaluation.predict import predict
    from ximgctx.training.config import resolve_tasks

    posts = load_posts(bench / "governed_val.jsonl")
    model = ContextModel(
        ModelConfig.from_dict({"tasks": resolve_tasks("contextbench"), "encoder": {"arch": "ximgctx-tiny"}})
    )
    loader = DataLoader(PostDataset(posts), batch_size=4, collate_fn=model.processor)

    class Gather:
        """Stands in for Accelerate: 'twice' is what a plain gather does with even_batches' padding."""

        def __init__(self, twice: bool) -> None:
            self.twice = twice

        def gather_for_metrics(self, x):  # noqa: ANN001, ANN201
            if isinstance(x, torch.Tensor) and x.dtype == torch.long and x.ndim == 1 and self.twice:
                return torch.cat([x, x[:1]])
            return x

    out = predict(model, loader, keys=("image",), accelerator=Gather(twice=False))
    assert out["image"].index.tolist() == list(range(13))
    assert out["image"].logits["intent"].shape == (13, 4)
    with pytest.raises(RuntimeError, match="more than once"):
        predict(model, loader, keys=("image",), accelerator=Gather(twice=True))


_HANG = textwrap.dedent('''
    """Rank 1 stalls before a collective; rank 0 must fail after the configured timeout, not hang."""
    import sys, time
    from pathlib import Path
    import torch
    from ximgctx.training import TrainConfig
    from ximgctx.training._runtime import make_accelerator

    out = Path(sys.argv[1])
    acc = make_accelerator(TrainConfig(collective_timeout_s=3, tensorboard=False), out)
    if acc.process_index == 1:
        time.sleep(60)
        (out / "stuck-rank-woke").touch()  # only if the run waited a minute for it
    acc.reduce(torch.ones(1), reduction="sum")
    (out / f"rank{acc.process_index}-reduced").touch()
''')


@pytest.mark.distributed
@pytest.mark.slow
def test_a_stuck_rank_fails_the_run_after_the_collective_timeout(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(_HANG)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    # the run ended while rank 1 still slept: it was stopped, not waited for, and no collective completed
    markers = [m for m in ("stuck-rank-woke", "rank0-reduced") if (tmp_path / m).exists()]
    assert markers == [], proc.stderr[-3000:]
    assert "timed out" in proc.stderr.lower() or "timeout" in proc.stderr.lower()
