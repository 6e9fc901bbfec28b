"""Package layering: no module imports a later stage (data -> models -> training/evaluation/inference ->
hitl/serve -> bench/quickstart/cli), and evaluation and inference never import training. The few exceptions
are listed with their reason; a new one fails here until it is either removed or listed."""

from __future__ import annotations

import ast
from pathlib import Path

import ximgctx

ROOT = Path(ximgctx.__file__).parent
#: top-level package or module -> stage
STAGE = {
    **dict.fromkeys(["errors", "_artifacts", "_fsutil", "_yaml", "_hub", "config", "_distributed"], 0),
    **dict.fromkeys(["data", "adapters", "contextbench", "governance"], 1),
    "models": 2,
    **dict.fromkeys(["training", "evaluation", "inference"], 3),
    **dict.fromkeys(["hitl", "serve"], 4),
    **dict.fromkeys(["bench", "quickstart", "cli", "__init__"], 5),
}
#: (importing module, imported module) -> why it is allowed
ALLOWED = {
    (
        "config.py",
        "ximgctx.models.fusion",
    ): "fusion.kind is validated against the one FUSIONS registry (lazy)",
    ("governance/purge.py", "ximgctx.models._serialization"): "ximgctx purge reads a model's author digests",
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ximgctx."):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("ximgctx."))


def test_no_module_imports_a_later_stage():
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        here = rel.split("/")[0].removesuffix(".py")
        assert here in STAGE, f"{rel}: a new top-level module; give it a stage in this test"
        for module in _imports(path):
            there = module.split(".")[1]
            assert there in STAGE, f"{rel} imports {module}: unknown top-level module"
            later = STAGE[there] > STAGE[here]
            sideways = here in ("evaluation", "inference") and there == "training"
            if later or sideways:
                found[(rel, module)] = True
    unexplained = sorted(set(found) - set(ALLOWED))
    assert not unexplained, f"imports from a later stage: {unexplained}"
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"listed exceptions that no longer exist (remove them): {stale}"
