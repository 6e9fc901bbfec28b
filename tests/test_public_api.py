"""The public surface named in the design: each name is the object its defining module holds, of the kind the
design promises (a class, a dataclass config, a function with the documented parameters), loaded lazily
where it needs torch, and nothing else answers to ``ximgctx.<name>``."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import subprocess
import sys

import pytest

import ximgctx

#: public name -> (module that defines it, kind, parameters the design documents, in order of appearance).
#: kind: "dataclass" (a config or record: the parameters are its fields), "class" (the parameters are its
#: constructor's), "exception" (a subclass of XimgctxError), "function" (the parameters are its own).
SURFACE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Post": ("ximgctx.data.record", "dataclass", ("id", "image", "text", "replies", "labels", "meta")),
    "Reply": ("ximgctx.data.record", "dataclass", ("text", "author")),
    "load_posts": (
        "ximgctx.data.io",
        "function",
        ("path", "image_root", "streaming", "columns", "split"),
    ),
    "write_posts": ("ximgctx.data.post_write", "function", ("posts", "path")),
    "EncoderConfig": ("ximgctx.config", "dataclass", ("arch", "pretrained", "backend")),
    "FusionConfig": ("ximgctx.config", "dataclass", ("kind", "hidden_dim", "dropout", "cross_rank")),
    "TaskSpec": ("ximgctx.config", "dataclass", ("name", "labels", "kind", "source", "prompt")),
    "ModelConfig": ("ximgctx.config", "dataclass", ("tasks", "encoder", "fusion", "lora")),
    "ContextModel": ("ximgctx.models.context_model", "class", ("config",)),
    "Predictor": ("ximgctx.inference.predictor", "class", ("model", "device", "batch_size", "memory")),
    "Moderator": ("ximgctx.inference.moderation", "class", ("predictor", "policy")),
    "ModerationPolicy": ("ximgctx.models.policy", "dataclass", ("categories",)),
    "SearchIndex": ("ximgctx.inference.search", "class", ("records", "indexes", "mode")),
    "govern": ("ximgctx.governance.core", "function", ("posts", "policy", "key")),
    "GovernancePolicy": (
        "ximgctx.governance.policy",
        "dataclass",
        ("allowed_visibilities", "opt_out_authors"),
    ),
    "aggregate_votes": ("ximgctx.hitl.aggregate", "function", ("votes", "method", "tasks")),
    "select_for_labeling": ("ximgctx.hitl.select", "function", ("predictor", "pool", "k", "strategy")),
    "train": ("ximgctx.training.finetune", "function", ("config", "overrides", "resume")),
    "pretrain": ("ximgctx.training.pretrain", "function", ("config", "overrides", "resume")),
    "evaluate": ("ximgctx.evaluation.report", "function", ("model", "posts")),
    "XimgctxError": ("ximgctx.errors", "exception", ()),
    "ArtifactError": ("ximgctx.errors", "exception", ()),
    "ConfigError": ("ximgctx.errors", "exception", ()),
    "InputError": ("ximgctx.errors", "exception", ()),
    "OutputError": ("ximgctx.errors", "exception", ()),
}

#: names resolved on first access (they need torch or an extra): name -> the module ``_LAZY`` imports.
LAZY = {
    "ContextModel": "ximgctx.models.context_model",
    "Predictor": "ximgctx.inference",
    "Moderator": "ximgctx.inference",
    "ModerationPolicy": "ximgctx.inference",
    "SearchIndex": "ximgctx.inference",
    "govern": "ximgctx.governance",
    "GovernancePolicy": "ximgctx.governance",
    "aggregate_votes": "ximgctx.hitl",
    "select_for_labeling": "ximgctx.hitl",
    "train": "ximgctx.training",
    "pretrain": "ximgctx.training",
    "evaluate": "ximgctx.evaluation",
}

#: also public, checked by their own tests below.
OTHERS = {"__version__", "contextbench", "trust_remote_arch"}


def _not_a_lora_or_data_config_name(name: str) -> bool:
    """The LoRA settings and DataConfig names are being renamed (peft's ``LoraConfig`` must not be shadowed);
    this file pins everything else."""
    return not name.lower().startswith("lora") and name != "DataConfig"


def test_all_is_exactly_the_surface() -> None:
    listed = [n for n in ximgctx.__all__ if _not_a_lora_or_data_config_name(n)]
    assert len(listed) == len(set(listed)), f"ximgctx.__all__ lists a name twice: {listed}"
    assert set(listed) == set(SURFACE) | OTHERS


def test_dir_covers_all_and_every_listed_name_resolves() -> None:
    assert set(ximgctx.__all__) <= set(dir(ximgctx))
    assert [n for n in ximgctx.__all__ if not hasattr(ximgctx, n)] == []


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_public_name_is_the_defining_modules_object(name: str) -> None:
    home, kind, documented = SURFACE[name]
    obj = getattr(ximgctx, name)
    assert obj is getattr(importlib.import_module(home), name)
    assert obj.__module__ == home
    assert obj.__name__ == name
    if name in LAZY:
        assert obj is getattr(importlib.import_module(LAZY[name]), name)
    if kind == "dataclass":
        assert inspect.isclass(obj) and dataclasses.is_dataclass(obj)
        params = [f.name for f in dataclasses.fields(obj)]
    elif kind == "class":
        assert inspect.isclass(obj) and not dataclasses.is_dataclass(obj)
        params = list(inspect.signature(obj).parameters)
    elif kind == "exception":
        assert inspect.isclass(obj) and issubclass(obj, ximgctx.XimgctxError) and issubclass(obj, Exception)
        params = []
    else:
        assert inspect.isfunction(obj), f"ximgctx.{name} is a {type(obj).__name__}, not a function"
        params = list(inspect.signature(obj).parameters)
    missing = [p for p in documented if p not in params]
    assert missing == [], f"ximgctx.{name} lacks the documented parameters {missing}; it has {params}"
    order = [params.index(p) for p in documented]
    assert order == sorted(order), f"ximgctx.{name}: {documented} are out of order in {params}"


def test_context_model_loads_and_saves_by_the_documented_methods() -> None:
    model = ximgctx.ContextModel
    assert isinstance(inspect.getattr_static(model, "from_pretrained"), classmethod)
    assert list(inspect.signature(model.from_pretrained).parameters)[:1] == ["path"]
    assert "expected_sha256" in inspect.signature(model.from_pretrained).parameters
    assert inspect.isfunction(inspect.getattr_static(model, "save_pretrained"))
    assert list(inspect.signature(model.save_pretrained).parameters)[:2] == ["self", "path"]
    assert isinstance(inspect.getattr_static(ximgctx.Predictor, "from_pretrained"), classmethod)


def test_errors_share_one_base() -> None:
    assert ximgctx.XimgctxError.__bases__ == (Exception,)
    for name in ("ArtifactError", "ConfigError", "InputError", "OutputError"):
        assert getattr(ximgctx, name).__mro__[1:].count(ximgctx.XimgctxError) == 1


def test_version_is_a_release_string() -> None:
    parts = ximgctx.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), ximgctx.__version__


def test_contextbench_generate_is_the_generator() -> None:
    from ximgctx.contextbench import _generate

    assert ximgctx.contextbench is importlib.import_module("ximgctx.contextbench")
    assert ximgctx.contextbench.generate is _generate.generate
    params = inspect.signature(ximgctx.contextbench.generate).parameters
    assert list(params)[0] == "out_dir"
    assert {"seed", "n_train", "n_val", "n_test", "image_size"} <= set(params)


def test_trust_remote_arch_is_the_encoders_opt_in() -> None:
    fn = ximgctx.trust_remote_arch
    assert inspect.isfunction(fn) and fn.__module__.startswith("ximgctx.models")
    assert fn is importlib.import_module(fn.__module__).trust_remote_arch
    assert list(inspect.signature(fn).parameters) == ["enabled"]


def test_create_app_is_the_service_factory() -> None:
    from ximgctx.serve import create_app

    assert inspect.isfunction(create_app) and create_app.__module__.startswith("ximgctx.serve")
    params = inspect.signature(create_app).parameters
    assert list(params)[0] == "model" and {"config", "policy", "index"} <= set(params)


_LAZY_PROBE = """
import json, sys
import ximgctx
before = sorted(m for m in sys.modules if m == "torch" or m.startswith(("ximgctx.", "torch.")))
loaded = {}
for name, home in json.loads(sys.argv[1]).items():
    getattr(ximgctx, name)
    loaded[name] = home in sys.modules
print(json.dumps({"before": before, "loaded": loaded, "torch_after": "torch" in sys.modules}))
"""


def test_lazy_names_are_imported_only_when_accessed() -> None:
    """``import ximgctx`` loads the configs and the post record only; the first access to a lazy name
    imports its module (and torch with it)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LAZY_PROBE, json.dumps(LAZY)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "torch" not in seen["before"], seen["before"]
    lazy_homes = set(LAZY.values()) | {SURFACE[n][0] for n in LAZY}
    assert sorted(lazy_homes & set(seen["before"])) == []
    assert seen["loaded"] == dict.fromkeys(LAZY, True)
    assert seen["torch_after"] is True


def test_a_lazy_name_is_cached_after_first_access() -> None:
    value = ximgctx.ContextModel
    assert vars(ximgctx)["ContextModel"] is value


def test_unknown_name() -> None:
    with pytest.raises(AttributeError, match="module 'ximgctx' has no attribute 'Nope'"):
        ximgctx.Nope  # noqa: B018
    assert getattr(ximgctx, "Nope", "absent") == "absent"
    assert "Nope" not in dir(ximgctx)
    with pytest.raises(ImportError, match="Nope"):
        exec("from ximgctx import Nope", {})


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ximgctx.cli", "--help"], capture_output=True, text=True, check=True
    )
    from ximgctx.cli import COMMANDS

    for name in COMMANDS:
        assert f"  {name}" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ximgctx.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr
