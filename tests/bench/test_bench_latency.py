"""``ximgctx bench latency``: a real server on 127.0.0.1 answers every request, and the JSON carries both
paths' percentiles and their ratio."""

from __future__ import annotations

from ximgctx.bench import latency
from ximgctx.cli.bench import build_parser


def test_latency_benchmark_serves_every_request_and_reports_percentiles() -> None:
    args = build_parser().parse_args(
        ["latency", "--arch", "ximgctx-tiny", "--small-arch", "ximgctx-tiny", "--requests", "4"]
        + ["--warmup-requests", "1", "--n", "2", "--replies", "3", "--image-size", "64"]
    )
    result = latency.run(args)
    (row,) = result["by_arch"]  # the small architecture is the same one: measured once
    assert row["statuses"] == {"200": 5}
    for path in ("in_process_ms", "served_ms"):
        p = row[path]
        assert 0 < p["p50"] <= p["p90"] <= p["p99"]
    ratio = row["served_ms"]["p50"] / row["in_process_ms"]["p50"]
    assert row["served_over_in_process_p50"] == round(ratio, 3)
    assert result["reference_suspect"] == (row["served_over_in_process_p50"] < 0.8)
    assert result["meets_target"] is None or isinstance(result["meets_target"], bool)
