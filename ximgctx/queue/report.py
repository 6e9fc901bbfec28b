"""What the votes add up to: ``queue export`` (Dawid–Skene into a governed training manifest with
provenance) and ``queue stats`` (throughput, agreement, labeler reliability, gold accuracy)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

from ximgctx._artifacts import atomic_output, output_errors
from ximgctx.data.record import Post
from ximgctx.hitl.aggregate import aggregate_votes
from ximgctx.queue.ingest import item_post
from ximgctx.queue.models import Item
from ximgctx.queue.store import QueueStore

__all__ = ["export_manifest", "queue_stats"]


def _same(a: Any, b: Any) -> bool:
    """One labeler's answer equals another (a multilabel answer as a set)."""
    if isinstance(a, list) or isinstance(b, list):
        return set(a if isinstance(a, list) else [a]) == set(b if isinstance(b, list) else [b])
    return a == b


def _agreement(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per task: the share of pairs of labelers on the same item who gave the same answer."""
    by_item: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in rows:
        by_item[(r["task"], r["post_id"])].append(r["label"])
    pairs: dict[str, list[bool]] = defaultdict(list)
    for (task, _), labels in by_item.items():
        pairs[task] += [_same(a, b) for a, b in combinations(labels, 2)]
    return {task: (sum(v) / len(v) if v else None) for task, v in sorted(pairs.items())}


def _gold_accuracy(rows: list[dict[str, Any]]) -> tuple[float | None, dict[str, dict[str, float]]]:
    """Overall and per labeler: the share of gold-item answers equal to the known answer."""
    per: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r["gold"] and r["task"] in r["gold"]:
            per[r["labeler"]].append(_same(r["label"], r["gold"][r["task"]]))
    every = [x for v in per.values() for x in v]
    overall = sum(every) / len(every) if every else None
    return overall, {k: {"accuracy": sum(v) / len(v), "answers": len(v)} for k, v in sorted(per.items())}


def queue_stats(store: QueueStore, *, now: float | None = None) -> dict[str, Any]:
    """The queue's figures: items and votes, throughput, inter-labeler agreement, labeler reliability
    (Dawid–Skene), and accuracy on gold items. Labelers appear as digest prefixes only."""
    now = time.time() if now is None else now
    rows = store.vote_rows()
    counts = store.count()
    times = sorted({(r["post_id"], r["labeler"]): r["time"] for r in rows}.values())  # one per answer
    span_h = (times[-1] - times[0]) / 3600 if len(times) > 1 else 0.0
    throughput = {
        "answers": len(times),
        "answers_last_hour": sum(t > now - 3600 for t in times),
        "answers_per_hour": (len(times) / span_h) if span_h > 0 else None,
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
    }
    plain = [r for r in rows if r["gold"] is None]
    reliability: list[dict[str, Any]] = []
    if plain:
        agg = aggregate_votes(store.votes(gold=False), method="dawid_skene", tasks=store.tasks)
        reliability = [r.to_dict() for r in agg.labelers]
    gold_overall, gold_per = _gold_accuracy(rows)
    return {
        "counts": counts,
        "throughput": throughput,
        "agreement": _agreement(plain),
        "labelers": reliability,
        "gold": {"accuracy": gold_overall, "labelers": gold_per},
    }


def export_manifest(
    store: QueueStore,
    out: str | Path,
    *,
    method: str = "soft",
    governance: Any = None,
    min_answers: int = 1,
) -> dict[str, Any]:
    """Aggregate the votes (``soft``: Dawid–Skene posteriors; ``dawid_skene``; ``majority``) into a training
    manifest (JSONL posts, images written beside it in ``<out>.images/``), governed again on the way out
    (an opt-out since the item was queued still applies). Gold items keep their known labels. Each post's
    ``meta.label_provenance`` says how its labels were made."""
    from ximgctx.governance import govern

    out = Path(out)
    rows = store.vote_rows()
    plain = [r for r in rows if r["gold"] is None]
    answers: dict[str, set[str]] = defaultdict(set)
    for r in plain:
        answers[r["post_id"]].add(r["labeler"])
    agg = aggregate_votes(store.votes(gold=False), method=method, tasks=store.tasks) if plain else None
    exported_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    posts: list[Post] = []
    images: dict[str, bytes | None] = {}  # the JPEG bytes stored with each exported item
    with store.sessions() as s:
        for item in s.query(Item).order_by(Item.id):
            post = item_post(item)
            if item.gold is not None:
                post.labels = json.loads(item.gold)
                prov: dict[str, Any] = {"source": "ximgctx queue", "kind": "gold"}
            elif agg is not None and len(answers.get(item.post_id, ())) >= min_answers:
                a = agg[item.post_id]
                post.labels = dict(a.labels)
                prov = {
                    "source": "ximgctx queue",
                    "kind": "votes",
                    "method": method,
                    "labelers": len(answers[item.post_id]),
                    "votes": dict(a.votes),
                    "agreement": {k: round(v, 6) for k, v in a.agreement.items()},
                }
            else:
                continue
            post.meta["label_provenance"] = {**prov, "queue_source": item.source, "exported_at": exported_at}
            images[post.id] = item.image
            post.image = None
            posts.append(post)
    governed = govern(posts, governance)
    folder = out.with_name(out.name + ".images")
    with atomic_output(out) as tmp, output_errors(out), open(tmp, "w", encoding="utf-8") as f:
        for i, post in enumerate(governed.posts):
            jpeg = images.get(post.id)
            if jpeg is not None:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{i:06d}.jpg").write_bytes(jpeg)
                post.image = f"{folder.name}/{i:06d}.jpg"
            f.write(post.to_json() + "\n")
    return {
        "out": str(out),
        "posts": len(governed.posts),
        "gold": sum(p.meta["label_provenance"]["kind"] == "gold" for p in governed.posts),
        "votes": len(plain),
        "method": method,
        "dropped": {k: v for k, v in governed.audit.dropped_posts.items() if v},
    }
