"""The type checker is clean on the package (mypy, configured in ``mypy.ini``: the public-surface modules with
every function annotated; ``strict_equality``, so comparing a Literal kind with a misspelt string fails)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e '.[dev]')"
)
def test_mypy_is_clean_on_the_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy.ini")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Success" in output
