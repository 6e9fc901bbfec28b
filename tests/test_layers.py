"""Package layering, counted two ways that must agree: from the source (``ast``: every import statement,
function-local ones included, ``if TYPE_CHECKING:`` blocks excluded) and by import-linter's contracts in
``.importlinter`` (``lint-imports``, also run in CI).

1. No import cycle between ximgctx modules: the module graph has no strongly connected component larger
   than one module.
2. Each top-level package or module imports only the layers listed below it in ``.importlinter``.
"""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ximgctx

ROOT = Path(ximgctx.__file__).parent
REPO = ROOT.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("ximgctx", *path.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The ximgctx modules ``name`` imports at run time (the longest known module of each import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            # ``from pkg import submodule`` runs pkg's __init__ too: it imports the package and the submodule
            targets = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
        for t in targets:
            while t not in known and "." in t:
                t = t.rpartition(".")[0]
            if t in known and t != name and t.startswith("ximgctx"):
                yield t


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: set(_imported(name, path, known)) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layers() -> list[set[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".importlinter")
    lines = cfg["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [{p.strip() for p in line.split("|")} for line in lines if line.strip()]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], f"import cycles: {cycles}"


def test_every_top_level_module_has_a_layer_and_imports_only_lower_layers() -> None:
    layers = _layers()
    rank = {name: i for i, names in enumerate(layers) for name in names}  # 0 = top
    top_level = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    top_level -= {"__init__", "__pycache__", "__main__", "resources"}
    assert sorted(top_level - set(rank)) == [], "a top-level module without a layer in .importlinter"
    wrong = []
    for name, targets in _graph().items():
        here = name.split(".")[1] if "." in name else None
        for t in targets:
            there = t.split(".")[1] if "." in t else None
            if here is None or there is None or here == there:
                continue
            if rank[there] <= rank[here]:  # a higher layer, or a sibling in the same layer
                wrong.append(f"{name} -> {t}")
    assert wrong == [], f"imports of a higher or sibling layer: {sorted(wrong)}"


def test_import_linter_agrees() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a development dependency (pip install -e '.[dev]')"
    proc = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "KEPT" in proc.stdout


def test_fusion_registry_matches_the_config_kinds() -> None:
    from ximgctx.config import FUSION_KINDS
    from ximgctx.models.fusion import FUSIONS

    assert sorted(FUSIONS) == sorted(FUSION_KINDS)


def test_encoder_registry_matches_the_config_backends() -> None:
    from ximgctx.config import ENCODER_BACKENDS
    from ximgctx.models.backends import ENCODERS
    from ximgctx.models.encoder import Encoder

    assert sorted(ENCODERS) == sorted(ENCODER_BACKENDS)
    assert all(issubclass(cls, Encoder) and cls.backend == name for name, cls in ENCODERS.items())
