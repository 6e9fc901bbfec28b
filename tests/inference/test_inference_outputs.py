"""Batch outputs: posts with a bad label still get a result, outputs are standard JSON, inputs are never
overwritten."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ximgctx.cli.inference import main as cli_main
from ximgctx.data.io import write_posts
from ximgctx.inference.batch import finite_record, write_records

from .._inference_fixtures import make_posts, model_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _manifest(tmp_path: Path) -> Path:
    """Four posts; the second's only fault is a label value (an empty label string)."""
    data = tmp_path / "posts.jsonl"
    write_posts(make_posts(4, seed=11), data)
    lines = data.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["labels"] = {"meaning": "", "intent": [3]}
    lines[1] = json.dumps(bad)
    data.write_text("\n".join(lines) + "\n")
    return data


@pytest.mark.parametrize("command", ["predict", "moderate"])
def test_a_post_whose_only_fault_is_a_label_gets_a_result(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _manifest(tmp_path)
    out = tmp_path / "out.jsonl"
    args = ["--model", str(model_dir()), "--data", str(data), "--out", str(out), "--device", "cpu"]
    assert cli_main([*args, "--no-progress"], command=command) == 0
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"p11-{i:04d}" for i in range(4)]
    assert json.loads(capsys.readouterr().err)["skipped_records"] == 0


def test_output_equal_to_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _manifest(tmp_path)
    before = data.read_bytes()
    args = ["--model", str(model_dir()), "--data", str(data), "--out", str(data), "--device", "cpu"]
    assert cli_main([*args, "--no-progress"], command="predict") == 2
    assert "is also the input" in capsys.readouterr().err
    assert data.read_bytes() == before


def test_outputs_are_standard_json(tmp_path: Path) -> None:
    rec = {
        "id": "a",
        "x": math.nan,
        "tasks": {"t": {"scores": {"l": math.inf}}},
        "v": [1.0, -math.inf],
        "problems": [],
    }
    fixed = finite_record(rec)
    assert fixed["x"] is None and fixed["tasks"]["t"]["scores"]["l"] is None and fixed["v"] == [1.0, None]
    assert fixed["problems"] == [
        "output: x: not a finite number; written as null",
        "output: tasks.t.scores.l: not a finite number; written as null",
        "output: v[1]: not a finite number; written as null",
    ]
    out = tmp_path / "r.jsonl"
    assert write_records([rec], out) == 1
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert finite_record({"id": "b", "s": 0.5}) == {"id": "b", "s": 0.5}  # nothing to fix: unchanged


def test_cli_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--model",
        str(model_dir()),
        "--data",
        str(tmp_path / "nope.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    with pytest.raises(SystemExit) as exit_:  # an argument error, before the model loads
        cli_main([*args, "--device", "cpu"], command="predict")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --data: no such file or folder" in err and "nope.jsonl" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--index", str(tmp_path / "no-index"), "--post", "p"], command="search")
    assert exit_.value.code == 2
    assert "argument --index: no such folder" in capsys.readouterr().err


def test_cli_lets_real_bugs_show_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ximgctx.cli import inference as cli

    def broken(args: object) -> int:
        raise ValueError("a bug, not a user mistake")

    monkeypatch.setattr(cli, "_index", broken)
    data = _manifest(tmp_path)
    with pytest.raises(ValueError, match="a bug"):
        cli_main(
            ["--model", str(model_dir()), "--data", str(data), "--out", str(tmp_path / "i")], command="index"
        )
