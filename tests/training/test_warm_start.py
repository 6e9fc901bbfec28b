"""Warm start (``train.init_from``): a run that starts from a saved model's weights.

At step 0 the run's model gives the saved model's logits bit for bit, trains the same parameters in the same
groups as a fresh run, and a few steps change it; an incompatible folder is a ConfigError naming each
difference; a wrong pin is refused; resuming a warm-started run is exact; the card records the start by its
digest, never by a local path.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_training import bench, experiment  # noqa: F401  (the module-scoped ContextBench)
from ximgctx import ContextModel, load_posts
from ximgctx._artifacts import artifact_digest
from ximgctx.config import ConfigError
from ximgctx.errors import ArtifactError
from ximgctx.training import load_experiment, train
from ximgctx.training.finetune import _model
from ximgctx.training.warm import WARM_START_SECTION, incompatibilities

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _quick(bench: Path, out: Path, **train_cfg: object) -> dict:  # noqa: F811
    return experiment(bench, out, **{"max_steps": 3, "save_every": 3, "eval_every": 100, **train_cfg})


@pytest.fixture(scope="module")
def parent(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The exported model of a first (fresh) run."""
    result = train(_quick(bench, tmp_path_factory.mktemp("parent") / "run"))
    assert result.model_dir is not None
    return Path(result.model_dir)


def _logits(model: ContextModel, bench: Path) -> dict[str, torch.Tensor]:  # noqa: F811
    posts = load_posts(bench / "governed_val.jsonl")
    model.eval()
    with torch.no_grad():
        return model(model.processor(posts)).logits


def test_at_step_zero_a_warm_start_is_the_saved_model_and_trains_like_a_fresh_run(
    bench: Path,  # noqa: F811
    parent: Path,
    tmp_path: Path,
) -> None:
    cfg = load_experiment(_quick(bench, tmp_path / "warm", init_from=str(parent)))
    warm, card = _model(cfg, {"ok": True}, 1, False)
    saved = ContextModel.from_pretrained(parent)
    a, b = _logits(warm, bench), _logits(saved, bench)
    assert a.keys() == b.keys() == {t.name for t in cfg.model.tasks}
    for task in a:
        assert torch.equal(a[task], b[task]), task  # bit-identical before any step
    # trainable exactly like a fresh run: the same counts, the same parameter groups, adapters unmerged
    torch.manual_seed(0)
    fresh = ContextModel(cfg.model)
    assert warm.trainable_parameters() == fresh.trainable_parameters()
    assert warm.trainable_parameters()["lora"] > 0
    warm_groups, fresh_groups = warm.parameter_groups(), fresh.parameter_groups()
    assert {k: [p.shape for p in v] for k, v in warm_groups.items()} == {
        k: [p.shape for p in v] for k, v in fresh_groups.items()
    }
    trainable = {n for n, p in warm.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert not any(getattr(m, "merged", False) for m in warm.modules())
    # the card names the start by its digest, never by the local folder
    digest = artifact_digest(parent)
    assert card[WARM_START_SECTION] == {"from": parent.name, "sha256": digest}
    assert card["Training"]["config"]["train"]["init_from"] == f"sha256:{digest}"
    assert str(parent) not in json.dumps(card)


def test_a_warm_started_run_trains_from_the_saved_weights(
    bench: Path,  # noqa: F811
    parent: Path,
    tmp_path: Path,
) -> None:
    digest = artifact_digest(parent)
    result = train(_quick(bench, tmp_path / "warm", init_from=str(parent), init_sha256=digest))
    child = Path(result.model_dir)
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(child / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("heads.") for k in changed) and any(k.startswith("fusion.") for k in changed)
    lora_a = load_file(str(parent / "adapter" / "adapter_model.safetensors"))
    lora_b = load_file(str(child / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(lora_a[k], lora_b[k]) for k in lora_a)  # the adapters trained on
    # the frozen base weights of the encoder are the parent's, bit for bit
    base = [k for k in before if k.startswith("encoder.")]
    assert base and all(torch.equal(before[k], after[k]) for k in base)
    card = json.loads((child / "card.json").read_text())
    assert card[WARM_START_SECTION]["sha256"] == digest
    assert card["Training"]["config"]["train"]["init_from"] == f"sha256:{digest}"
    text = "".join(p.read_text() for p in child.rglob("*") if p.suffix in (".json", ".md"))
    assert str(parent) not in text  # no local path of the parent in the exported model
    # a fresh run of the same steps ends elsewhere: the warm start really started from the parent
    fresh = Path(train(_quick(bench, tmp_path / "fresh")).model_dir)
    fresh_w = load_file(str(fresh / "model.safetensors"))
    assert not torch.equal(fresh_w["heads.intent.linear.weight"], after["heads.intent.linear.weight"])


def test_an_incompatible_folder_is_a_config_error_naming_each_difference(
    bench: Path,  # noqa: F811
    parent: Path,
    tmp_path: Path,
) -> None:
    cfg = _quick(bench, tmp_path / "warm", init_from=str(parent))
    tasks = load_experiment(cfg).to_dict()["model"]["tasks"]
    tasks[0]["labels"] = [*tasks[0]["labels"], "brand-new"]
    cfg["model"]["tasks"] = tasks
    cfg["model"]["lora"]["r"] = 4
    with pytest.raises(ConfigError) as info:
        train(cfg)
    message = str(info.value)
    assert f"model.tasks.{tasks[0]['name']}.labels" in message
    assert "model.lora.r (init_from: 2, now: 4)" in message
    assert "train.init_from=" in message
    # training knobs may differ: dropout, loss weights
    ok = load_experiment(_quick(bench, tmp_path / "warm2", init_from=str(parent)))
    knobs = copy.deepcopy(ok.model)
    knobs.fusion.dropout, knobs.tasks[0].weight = 0.0, 3.0
    assert incompatibilities(ok.model, knobs) == []
    knobs.tasks = knobs.tasks[1:]
    assert incompatibilities(ok.model, knobs) == [
        f"model.tasks.{ok.model.tasks[0].name} (init_from: 'present', now: '<absent>')"
    ]


def test_a_wrong_pin_or_an_altered_folder_is_refused(
    bench: Path,  # noqa: F811
    parent: Path,
    tmp_path: Path,
) -> None:
    with pytest.raises(ArtifactError, match="(?i)sha-?256|digest"):
        train(_quick(bench, tmp_path / "a", init_from=str(parent), init_sha256="0" * 64))
    altered = tmp_path / "altered"
    shutil.copytree(parent, altered)
    heads = altered / "card.json"
    heads.write_text(heads.read_text() + " ")
    with pytest.raises(ArtifactError, match="card.json"):
        train(_quick(bench, tmp_path / "b", init_from=str(altered)))
    with pytest.raises(ConfigError, match="init_sha256"):
        load_experiment(_quick(bench, tmp_path / "c", init_sha256="abc"))
    with pytest.raises(ConfigError, match="pins train.init_from"):
        load_experiment(_quick(bench, tmp_path / "d", init_sha256="0" * 64))


def test_resuming_a_warm_started_run_is_exact(bench: Path, parent: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = {"max_steps": 4, "save_every": 2, "init_from": str(parent)}
    straight = train(_quick(bench, tmp_path / "straight", **cfg))
    stopped = train(_quick(bench, tmp_path / "resumed", **cfg), stop_after=2)
    assert stopped.stopped_early and stopped.steps == 2
    resumed = train(_quick(bench, tmp_path / "resumed", **cfg), resume="latest")
    assert straight.steps == resumed.steps == 4
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_by_override_and_by_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ximgctx.cli import train as cli
    from ximgctx.training import finetune

    cfg = load_experiment({"model": {"tasks": "contextbench"}}, ["train.init_from=/models/serving"])
    assert cfg.train.init_from == "/models/serving" and cfg.train.init_sha256 is None
    seen: dict = {}

    def record(config: str, **kwargs: object) -> None:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(finetune, "train", record)
    (tmp_path / "x.yaml").touch()
    folder = tmp_path / "serving: v1"  # a path YAML would misread unquoted
    folder.mkdir()
    with pytest.raises(SystemExit):
        cli.main(
            ["--config", str(tmp_path / "x.yaml"), "--init-from", str(folder), "--expect-sha256", "a" * 64],
            command="train",
        )
    overrides = seen["overrides"]
    cfg = load_experiment({"model": {"tasks": "contextbench"}}, overrides)
    assert cfg.train.init_from == str(folder) and cfg.train.init_sha256 == "a" * 64
    with pytest.raises(SystemExit):  # a missing folder is an argument error naming it
        cli.main(
            ["--config", str(tmp_path / "x.yaml"), "--init-from", str(tmp_path / "nope")], command="train"
        )
