"""The command line answers ``--help`` and argument errors before the library loads: no torch, numpy,
open_clip, transformers, fastapi, sqlalchemy, presidio or faiss in ``sys.modules`` (the module set is
asserted, never the time: speed is ``ximgctx bench cli``'s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "numpy", "open_clip", "transformers", "fastapi", "sqlalchemy", "presidio_analyzer", "faiss")

#: walks every command and sub-command in one fresh interpreter, recording the heavy modules after each.
_WALK = """
import contextlib, io, json, sys
from ximgctx.cli import command_parsers, main
heavy = json.loads(sys.argv[1])
rows = [{"argv": [], "prefix_heavy": [m for m in heavy if m in sys.modules]}]
for prefix in [[]] + [p for p, _ in command_parsers()]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main([*prefix, "--help"])
        except SystemExit as e:
            code = e.code
    rows.append({"argv": prefix, "code": code, "usage": out.getvalue().startswith("usage:"),
                 "heavy": [m for m in heavy if m in sys.modules]})
print(json.dumps(rows))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False, timeout=120
    )


def test_every_help_answers_without_the_heavy_libraries() -> None:
    proc = _python(_WALK, json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    walked = {" ".join(r["argv"]) for r in rows[1:]}
    assert {
        "",
        "predict",
        "queue serve",
        "bench inference",
        "memory add",
        "policy init",
        "bench cli",
    } <= walked
    assert len(walked) >= 37
    for row in rows[1:]:
        name = "ximgctx " + " ".join([*row["argv"], "--help"])
        assert row["code"] in (0, None) and row["usage"], f"{name} exited {row['code']}"
        assert row["heavy"] == [], f"{name} imported {row['heavy']}"


#: runs one argv through the CLI and reports the exit status, stderr and whether torch was imported.
_ONE = """
import contextlib, io, json, sys
from ximgctx.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "err": err.getvalue(), "torch": "torch" in sys.modules}))
"""


def _one(*argv: str) -> dict:
    proc = _python(_ONE, *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_M, _P, _N = "{model}", "{posts}", "{nope}"


@pytest.mark.parametrize(
    ("argv", "flag", "missing"),
    [
        (["predict", "--model", _M, "--data", _N, "--out", "o.jsonl"], "--data", _N),
        (["predict", "--model", _N + "/a/b", "--data", _P, "--out", "o.jsonl"], "--model", _N + "/a/b"),
        (["moderate", "--model", _M, "--data", _P, "--out", "o", "--policy", _N], "--policy", _N),
        (["search", "--index", _N, "--text", "cat"], "--index", _N),
        (["govern", "--data", _P, "--out", "o", "--report", "r", "--governance", _N], "--governance", _N),
        (["train", "--config", _N], "--config", _N),
        (["purge", "--opt-out", _P, "--index", _N], "--index", _N),
    ],
)
def test_a_missing_input_is_an_argument_error_before_torch(tmp_path: Path, argv, flag, missing) -> None:
    model = tmp_path / "model"
    model.mkdir()
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "p1", "text": "hi"}\n')
    names = {"model": str(model), "posts": str(posts), "nope": str(tmp_path / "nope")}
    result = _one(*(a.format(**names) for a in argv))
    assert result["code"] == 2, result
    assert f"argument {flag}" in result["err"] and missing.format(**names) in result["err"], result["err"]
    assert result["torch"] is False


def test_a_missing_required_flag_is_argparses_error_before_torch() -> None:
    result = _one("predict", "--out", "preds.jsonl")
    assert result["code"] == 2 and "the following arguments are required: --model, --data" in result["err"]
    assert result["torch"] is False


def test_a_hub_id_passes_the_model_check() -> None:
    from ximgctx.cli._args import model_ref

    assert model_ref("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    with pytest.raises(Exception, match="no such model folder: runs/x/best"):
        model_ref("runs/x/best")
