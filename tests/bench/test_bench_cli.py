"""``ximgctx bench cli``: the figures' structure on a tiny subset (the figures themselves are the
benchmark's, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

from ximgctx.cli.bench import main


def test_bench_cli_reports_help_rows_baseline_and_startup(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.json"
    assert main(["cli", "--commands", "predict,queue", "--repeats", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["benchmark"] == "cli" and result["repeats"] == 1
    commands = [r["command"] for r in result["help"]]
    assert commands[0] == "ximgctx predict --help"
    assert {"ximgctx queue --help", "ximgctx queue serve --help", "ximgctx queue add --help"} <= set(commands)
    for row in result["help"]:
        assert row["rc"] == 0 and row["torch_imported"] is False and row["imported"] == [], row
        assert row["wall_s"] > 0 and row["peak_rss_mb"] > 0
    baseline = result["baseline"]
    assert baseline["torch_imported"] is True and "open_clip" in baseline["imported"]
    startup = result["startup"]
    assert startup["rc"] == 0 and startup["torch_imported"] is True
    summary = result["summary"]
    assert summary["startup_ratio"] == round(startup["wall_s"] / baseline["wall_s_interleaved"], 3)
    # CPU seconds of the child itself: importing torch takes well over a tenth of a second of work
    assert startup["cpu_s"] > 0.1 and baseline["cpu_s_interleaved"] > 0.1 and baseline["cpu_s"] > 0.1
    assert summary["startup_cpu_ratio"] == round(startup["cpu_s"] / baseline["cpu_s_interleaved"], 3)
    assert summary["help_max_s"] == max(r["wall_s"] for r in result["help"])
    assert summary["help_torch_imported"] == []
    assert isinstance(summary["help_under_target"], bool) and isinstance(
        summary["startup_under_target"], bool
    )
