"""Every notebook under notebooks/ executes top to bottom (nbclient) against artifacts the fixture makes.

The quickstart notebook needs a quickstart run: the fixture makes one at smoke size (tiny data, a few
steps) in a temporary folder and points the notebook at it through XIMGCTX_QUICKSTART.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ximgctx.cli.quickstart import main

    out = tmp_path_factory.mktemp("quickstart")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--out", str(out), "--smoke", "--quiet"], command="quickstart") == 0
    return out


def test_there_are_notebooks() -> None:
    assert any(p.name == "quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_clean_and_imports_only_ximgctx(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            f"{path.name}: outputs committed"
        )
        for line in cell.source.splitlines():
            words = line.split()
            if words[:1] == ["import"] or words[:1] == ["from"]:
                module = words[1].split(".")[0]
                assert module in ("ximgctx", "json", "os", "pathlib"), f"{path.name}: imports {module}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(
    path: Path, quickstart_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XIMGCTX_QUICKSTART", str(quickstart_run))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(path.parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if path.name == "quickstart.ipynb":
        assert "predicted" in text and "image+text+replies" in text
        assert any("image/png" in o.get("data", {}) for o in outputs), "the plot did not render"
