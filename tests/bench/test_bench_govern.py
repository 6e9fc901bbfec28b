"""``ximgctx bench govern``: the figures' structure on a small run (the rates are the benchmark's, never
asserted here), and the generated posts: unique, public, about the requested share holding personal data."""

from __future__ import annotations

import json
from pathlib import Path

from ximgctx.bench.govern import make_posts
from ximgctx.cli.bench import main


def test_generated_posts_are_unique_and_hold_the_requested_share_of_personal_data() -> None:
    posts = make_posts(400, pii=0.3, seed=3)
    texts = [p.text for p in posts] + [r.text for p in posts for r in p.replies]
    assert len(set(texts)) == len(texts)
    from ximgctx.governance import govern

    share = govern(posts, key=b"t" * 32).audit.posts_with_redactions / len(posts)
    assert 0.15 <= share <= 0.4, share
    assert make_posts(5, seed=1)[0].text == make_posts(5, seed=1)[0].text != make_posts(5, seed=2)[0].text


def test_bench_govern_reports_rate_startup_and_equality(tmp_path: Path, capsys) -> None:
    out = tmp_path / "govern.json"
    assert main(["govern", "--n", "200", "--check", "40", "--repeats", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["benchmark"] == "govern" and result["n_posts"] == 200
    assert result["posts_per_second_per_core"] > 0 and result["cpu_seconds"] > 0
    assert result["startup"]["wall_best"] > 0
    assert result["same_outputs_as_unoptimised"] == {"posts": 40, "equal": True}
    folder = result["shard_folder"]
    assert folder["same_output_bytes"] is True and folder["processes"] >= 2 and folder["speedup"] > 0
