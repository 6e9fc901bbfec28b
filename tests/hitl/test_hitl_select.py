"""Active learning: k distinct unlabeled posts, and a diverse batch instead of k near-duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from ximgctx import Post, Reply, write_posts
from ximgctx.cli.hitl import main as hitl_main
from ximgctx.hitl import STRATEGIES, pairwise_distance, select_for_labeling
from ximgctx.hitl.select import dropout_on
from ximgctx.inference import Predictor

from ..helpers import tiny_model, write_image

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TEXTS = [
    "when monday hits",
    "see you all saturday",
    "stay safe tonight",
    "nothing to see here",
    "this is fine",
    "who else is going",
    "never again",
    "best day ever",
]
COLORS = [
    (200, 30, 30),
    (30, 200, 30),
    (30, 30, 200),
    (200, 200, 30),
    (30, 200, 200),
    (200, 30, 200),
    (90, 90, 90),
    (240, 240, 240),
]


def _pool(folder: Path, copies: int = 4) -> list[Post]:
    """8 different posts, each with ``copies`` near-duplicates (same image and text, one reply differs)."""
    posts = []
    for b, (text, color) in enumerate(zip(TEXTS, COLORS, strict=True)):
        image = write_image(folder / f"b{b}.png", color)
        for c in range(copies):
            posts.append(Post(f"b{b}-c{c}", image, text, [Reply("lol"), Reply(f"copy {c}")]))
    return posts


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, list[Post]]:
    folder = tmp_path_factory.mktemp("pool")
    return Predictor(tiny_model(), device="cpu", batch_size=16), _pool(folder)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_selection_returns_k_distinct_unlabeled_posts(
    setup: tuple[Predictor, list[Post]], strategy: str
) -> None:
    predictor, pool = setup
    labeled = {"b0-c0", "b3-c1", "b5-c2"}
    chosen = select_for_labeling(
        predictor, pool + pool[:4], 6, strategy=strategy, labeled_ids=labeled, seed=1
    )
    ids = [s.id for s in chosen]
    assert len(ids) == 6 and len(set(ids)) == 6  # the repeated posts in the pool are considered once
    assert not set(ids) & labeled
    assert set(ids) <= {p.id for p in pool}
    assert [s.rank for s in chosen] == list(range(6))
    if strategy in ("entropy", "margin", "mc_dropout"):  # the k most uncertain, most uncertain first
        scores = [s.score for s in chosen]
        assert scores == sorted(scores, reverse=True)
    # asking for more than is left returns every remaining candidate once
    everything = select_for_labeling(predictor, pool, 100, strategy=strategy, labeled_ids=labeled)
    assert sorted(s.id for s in everything) == sorted({p.id for p in pool} - labeled)


def test_entropy_is_the_top_k_and_diverse_batch_is_more_spread_out(
    setup: tuple[Predictor, list[Post]],
) -> None:
    predictor, pool = setup
    k = 6
    entropy = select_for_labeling(predictor, pool, k, strategy="entropy")
    all_scores = select_for_labeling(predictor, pool, len(pool), strategy="entropy")
    rest = [s.score for s in all_scores if s.id not in {e.id for e in entropy}]
    assert min(s.score for s in entropy) >= max(rest)
    diverse = select_for_labeling(predictor, pool, k, strategy="diverse", seed=0)

    emb = predictor.embed(pool, normalize=True)  # (N, H)
    row = {p.id: i for i, p in enumerate(pool)}
    d_entropy = pairwise_distance(emb[[row[s.id] for s in entropy]])
    d_diverse = pairwise_distance(emb[[row[s.id] for s in diverse]])
    assert d_diverse > d_entropy, (d_diverse, d_entropy)
    # near-duplicates: the uncertainty top-k takes several copies of the same post; the diverse batch does not
    bases = lambda sel: {s.id.split("-")[0] for s in sel}  # noqa: E731
    assert len(bases(diverse)) == k > len(bases(entropy))
    # the diverse batch still starts from the most uncertain post
    assert diverse[0].id == entropy[0].id


def test_mc_dropout_switches_dropout_on_only_while_sampling(setup: tuple[Predictor, list[Post]]) -> None:
    predictor, pool = setup
    model = predictor.model
    dropouts = [m for m in model.fusion.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)  # the tiny test model is built with dropout 0
    with dropout_on(model, 0.2) as n:
        assert n == len(dropouts) + sum(isinstance(m, nn.MultiheadAttention) for m in model.fusion.modules())
        assert all(m.training and m.p == 0.2 for m in dropouts)
    assert all(not m.training and m.p == 0.0 for m in dropouts) and not model.training
    chosen = select_for_labeling(predictor, pool, 4, strategy="mc_dropout", mc_samples=4, seed=0)
    assert all(s.score > 0 for s in chosen)  # mutual information is positive once dropout samples differ
    again = select_for_labeling(predictor, pool, 4, strategy="mc_dropout", mc_samples=4, seed=0)
    assert [s.id for s in again] == [s.id for s in chosen]  # seeded
    with pytest.raises(ValueError, match="strategy must be one of"):
        select_for_labeling(predictor, pool, 4, strategy="loudest")


def test_cli_select(setup: tuple[Predictor, list[Post]], tmp_path: Path) -> None:
    predictor, pool = setup
    model_dir = predictor.model.save_pretrained(tmp_path / "model")
    manifest = tmp_path / "pool.jsonl"
    write_posts(pool, manifest)
    labeled = tmp_path / "labels.jsonl"
    labeled.write_text('{"id": "b1-c0", "labels": {"meaning": "ironic"}, "agreement": {"meaning": 1.0}}\n')
    out = tmp_path / "next.jsonl"
    rc = hitl_main(
        [
            "--model",
            str(model_dir),
            "--data",
            str(manifest),
            "-k",
            "5",
            "--out",
            str(out),
            "--strategy",
            "diverse",
            "--labeled",
            str(labeled),
            "--device",
            "cpu",
            "--posts-out",
            str(tmp_path / "to_label.jsonl"),
        ],
        command="select",
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5 and "b1-c0" not in {r["id"] for r in rows}
    assert set(rows[0]["per_task"]) == {"objects", "meaning", "intent"}
    assert np.isfinite([r["score"] for r in rows]).all()
    assert len((tmp_path / "to_label.jsonl").read_text().splitlines()) == 5
