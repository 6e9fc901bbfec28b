"""The public surface named in the design resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ximgctx

NAMES = [
    "Post",
    "load_posts",
    "EncoderConfig",
    "FusionConfig",
    "TaskSpec",
    "ModelConfig",
    "ContextModel",
    "Predictor",
    "Moderator",
    "SearchIndex",
    "govern",
    "aggregate_votes",
    "select_for_labeling",
    "train",
    "evaluate",
    "pretrain",
]


@pytest.mark.parametrize("name", NAMES)
def test_public_name_resolves(name) -> None:
    assert getattr(ximgctx, name) is not None
    assert name in dir(ximgctx)


def test_contextbench_generate_is_reachable() -> None:
    assert callable(ximgctx.contextbench.generate)


def test_unknown_name() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ximgctx.Nope  # noqa: B018


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ximgctx.cli", "--help"], capture_output=True, text=True, check=True
    )
    from ximgctx.cli import COMMANDS

    for name in COMMANDS:
        assert f"  {name}" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ximgctx.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr
