"""Install extras: the model imports nothing optional, and a missing extra is one line naming it."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ximgctx._extras import EXTRAS, MissingExtraError, extra_of, is_available, missing_extra, require
from ximgctx.errors import XimgctxError

ROOT = Path(__file__).resolve().parents[1]

#: packages of the service, the queue, governance, search, hitl, plots and TensorBoard
OPTIONAL = [
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "presidio_analyzer",
    "phonenumbers",
    "tldextract",
    "faiss",
    "crowdkit",
    "matplotlib",
    "tensorboard",
]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ the core path


@pytest.mark.slow
def test_the_model_training_and_inference_import_no_optional_package() -> None:
    code = f"""
import json, sys
import torch
import ximgctx, ximgctx.models
from ximgctx import ContextModel, FusionConfig, ModelConfig, TaskSpec
model = ContextModel(ModelConfig(tasks=[TaskSpec("meaning", ["a", "b"], "multiclass")],
                                 fusion=FusionConfig(kind="concat", hidden_dim=16)))
import ximgctx.training, ximgctx.inference.predictor, ximgctx.evaluation, ximgctx.contextbench
from ximgctx.training._runtime import make_accelerator
from ximgctx.training.config import TrainConfig
from ximgctx.governance import check_governed
print(json.dumps({{"params": sum(p.numel() for p in model.parameters()),
                  "loaded": sorted(m for m in {OPTIONAL!r} if m in sys.modules)}}))
"""
    out = last_json(run_python(code))
    assert out["params"] > 0
    assert out["loaded"] == []


# ------------------------------------------------------------------------------------ missing extras


def blocked(modules: list[str], body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter where ``modules`` cannot be imported (as if not installed)."""
    return run_python(f"import sys\nfor m in {modules!r}:\n    sys.modules[m] = None\n{body}")


CATCH = """
from ximgctx._extras import MissingExtraError
try:
{call}
except MissingExtraError as e:
    import json
    print(json.dumps({{"extra": e.extra, "module": e.module, "message": str(e)}}))
else:
    raise SystemExit("no MissingExtraError")
"""


def missing(modules: list[str], call: str) -> dict:
    body = CATCH.format(call="\n".join("    " + line for line in call.strip().splitlines()))
    return last_json(blocked(modules, body))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("modules", "call", "extra", "module"),
    [
        (["fastapi"], "import ximgctx.serve.app", "serve", "fastapi"),
        (["prometheus_client"], "import ximgctx.serve.metrics", "serve", "prometheus_client"),
        (["sqlalchemy"], "import ximgctx.queue", "queue", "sqlalchemy"),
        (["phonenumbers"], "from ximgctx.governance import govern\ngovern([])", "governance", "phonenumbers"),
        (
            ["presidio_analyzer"],
            "from ximgctx.governance.pii import find_pii\nfind_pii('mail me at a@b.example', ['email'])",
            "governance",
            "presidio_analyzer",
        ),
        (
            ["faiss"],
            "import numpy as np\nfrom ximgctx.inference.search import _make_index\n"
            "_make_index(np.zeros((2, 4), np.float32), np.arange(2), 'exact', None)",
            "search",
            "faiss",
        ),
        (
            ["crowdkit", "crowdkit.aggregation"],
            "import pandas as pd\nfrom ximgctx.hitl.aggregate import _fit\n"
            "_fit(pd.DataFrame({'task': ['p1', 'p1'], 'worker': ['u1', 'u2'], 'label': ['a', 'b']}),"
            " 'majority', 'one_coin', 10, 1e-5)",
            "hitl",
            "crowdkit",
        ),
        (
            ["matplotlib"],
            "from pathlib import Path\nimport tempfile\nfrom ximgctx.evaluation.report import write_report\n"
            "write_report({}, Path(tempfile.mkdtemp()) / 'r', plots=True)",
            "plots",
            "matplotlib",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    modules: list[str], call: str, extra: str, module: str
) -> None:
    out = missing(modules, call)
    assert (out["extra"], out["module"]) == (extra, module)
    message = out["message"]
    assert "\n" not in message
    assert message.endswith(
        f"needs the '{extra}' extra ({module} is not installed): pip install 'ximgctx[{extra}]'"
    )


@pytest.mark.slow
def test_report_plots_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    code = f"""
from pathlib import Path
from ximgctx.evaluation.report import write_report
write_report({{}}, Path({str(tmp_path / "r")!r}), plots=True)
"""
    proc = blocked(["matplotlib"], code)
    assert proc.returncode != 0
    assert (
        "MissingExtraError: evaluation plots (plots=False / --no-plots skips them) needs the 'plots'"
        in proc.stderr
    )
    assert not (tmp_path / "r").exists()


def test_require_imports_an_installed_optional_module_and_refuses_a_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json as stdlib_json  # not optional: require refuses to be asked about it

    with pytest.raises(KeyError, match="'json' is not an optional dependency"):
        require("json", feature="x")
    assert stdlib_json.dumps(1) == "1"
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingExtraError) as info:
        require("faiss", feature="the search index")
    assert str(info.value) == (
        "the search index needs the 'search' extra (faiss is not installed): pip install 'ximgctx[search]'"
    )
    assert isinstance(info.value, XimgctxError) and isinstance(info.value, ImportError)
    assert info.value.name == "faiss"
    assert not is_available("faiss")


def test_missing_extra_finds_the_extra_from_the_module_and_keeps_other_import_errors() -> None:
    err = missing_extra(
        ModuleNotFoundError("No module named 'sqlalchemy'", name="sqlalchemy.orm"), feature="q"
    )
    assert (err.extra, err.module) == ("queue", "sqlalchemy")
    broken = ModuleNotFoundError("No module named 'annotated_types'", name="annotated_types")
    with pytest.raises(ModuleNotFoundError) as info:
        missing_extra(broken, feature="the service")
    assert info.value is broken  # not an optional dependency: a broken install, reported as it is
    assert extra_of("presidio_analyzer.nlp_engine") == "governance"
    assert extra_of("alembic.command") == "queue"


def name_of(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()


def test_every_extra_is_declared_in_pyproject_and_all_and_dev_install_them() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    assert set(EXTRAS) <= set(optional)
    all_extras = optional["all"]
    assert len(all_extras) == 1 and all_extras[0].startswith("ximgctx[")
    assert set(all_extras[0][len("ximgctx[") : -1].split(",")) == set(EXTRAS)
    assert "ximgctx[all]" in optional["dev"]
    core_names = {name_of(d) for d in project["dependencies"]}
    for extra, deps in optional.items():
        for dep in deps:
            assert name_of(dep) not in core_names, f"{dep} of [{extra}] is also a core dependency"


def test_without_tensorboard_training_goes_on_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ximgctx.training import _runtime
    from ximgctx.training.config import TrainConfig

    monkeypatch.setattr(_runtime, "is_tensorboard_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=_runtime.__name__):
        acc = _runtime.make_accelerator(TrainConfig(tensorboard=True), tmp_path)
    assert acc.log_with == []
    warnings = [r.getMessage() for r in caplog.records if r.name == _runtime.__name__]
    assert warnings == [
        "train.tensorboard (TensorBoard logs) needs the 'tensorboard' extra (tensorboard is not installed): "
        "pip install 'ximgctx[tensorboard]'; training goes on without them "
        "(train.tensorboard: false silences this)"
    ]


@pytest.mark.slow
def test_a_command_whose_extra_is_missing_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    model = tmp_path / "model"  # a folder, so the command's argument checks pass and the extra is what fails
    model.mkdir()
    code = f"from ximgctx.cli import main\nraise SystemExit(main(['serve', '--model', {str(model)!r}]))"
    proc = blocked(["fastapi"], code)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ximgctx serve: the service (ximgctx serve) needs the 'serve' extra (fastapi is not installed): "
        "pip install 'ximgctx[serve]'"
    ]
