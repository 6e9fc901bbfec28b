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

__all__ = ["UNITS", "export_manifest", "queue_stats"]


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
    return overall, {k: {"accuracy": sum(v) / len(v), "task_votes": len(v)} for k, v in sorted(per.items())}


#: The units ``queue stats`` counts in, named in its output (``units``) so no figure is read in the wrong one.
UNITS = {
    "posts": "a queued post (one item; gold posts included unless named gold)",
    "answers": "one labeler's submitted form on one post (all its tasks together)",
    "task_votes": "one labeler's label for one task of one post (an answer holds one per task answered)",
    "cant_tell": "one task of one post a labeler marked 'can't tell' (part of an answer, not a vote)",
    "skips": "one post a labeler skipped with a reason (not an answer)",
    "labelers": "a registered labeler (a person with a token)",
}


def _counts(store: QueueStore, rows: list[dict[str, Any]], abstained: list[dict[str, Any]]) -> dict[str, Any]:
    """The queue's counts, each named by its unit (:data:`UNITS`)."""
    raw = store.count()
    answered = {(r["post_id"], r["labeler"]) for r in rows}
    answered |= {(r["post_id"], r["labeler"]) for r in abstained if r["task"] is not None}
    labelers = store.labelers()
    return {
        "posts": raw["items"],
        "posts_open": raw["open"],  # fewer answers than their overlap asks for (gold posts not counted)
        "posts_gold": raw["gold"],
        "answers": len(answered),
        "task_votes": raw["votes"],
        "cant_tell": sum(r["task"] is not None for r in abstained),
        "skips": sum(r["task"] is None for r in abstained),
        "labelers": len(labelers),
        "labelers_active": sum(bool(x["active"]) for x in labelers),
        "labelers_answering": len({who for _, who in answered}),
    }


def queue_stats(
    store: QueueStore, *, now: float | None = None, names: dict[str, str] | None = None
) -> dict[str, Any]:
    """The queue's figures: counts in named units (``units`` says what each counts), throughput in answers,
    inter-labeler agreement, labeler reliability (Dawid–Skene), accuracy on gold items, can't-tell per task
    and skips per reason. Labelers appear as digest prefixes; ``names`` (the operator's
    :meth:`~QueueStore.labeler_names`, made with the key) adds each known labeler's ``name``."""
    now = time.time() if now is None else now
    names = names or {}
    rows = store.vote_rows()
    abstained = store.abstention_rows()
    counts = _counts(store, rows, abstained)
    # one time per answer: its task votes and can't-tell marks share it (an answer of can't-tell only counts)
    answered = [*rows, *(r for r in abstained if r["task"] is not None)]
    times = sorted({(r["post_id"], r["labeler"]): r["time"] for r in answered}.values())
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
    people = {r["labeler"]: dict(r) for r in store.labelers()}
    for r in reliability:  # reliability in [0, 1]; votes: task votes counted
        people.setdefault(r["labeler"], {"labeler": r["labeler"]}).update(
            {"reliability": r["reliability"], "agreement": r["agreement"], "task_votes": r["votes"]}
        )
    for who, g in gold_per.items():
        people.setdefault(who, {"labeler": who})["gold_accuracy"] = g["accuracy"]
    for who, person in people.items():
        if who in names:
            person["name"] = names[who]
    cant_tell: dict[str, int] = defaultdict(int)
    skips: dict[str, int] = defaultdict(int)
    for r in abstained:
        if r["task"] is None:
            skips[r["reason"]] += 1
        else:
            cant_tell[r["task"]] += 1
    order = {r["labeler"]: i for i, r in enumerate(reliability)}
    return {
        "units": dict(UNITS),
        "counts": counts,
        "throughput": throughput,
        "agreement": _agreement(plain),  # per task: share of pairs of task votes on a post that agree
        "labelers": sorted(
            people.values(), key=lambda p: (order.get(p["labeler"], len(order)), p["labeler"])
        ),
        "gold": {"accuracy": gold_overall, "labelers": gold_per},  # per labeler: accuracy over their answers
        "cant_tell": dict(sorted(cant_tell.items())),  # task -> can't-tell marks
        "skips": dict(sorted(skips.items())),  # reason -> skips
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
    ``meta.label_provenance`` says how its labels were made. Under ``majority`` and ``dawid_skene`` a task
    whose votes tie has no label (the tie rule of :mod:`ximgctx.hitl.aggregate`): a post with no label left
    is not exported until another vote decides it; ``unresolved`` counts both."""
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
    unresolved = {"posts": 0, "tasks": 0}  # tied votes (hard methods): no label until another vote
    images: dict[str, bytes | None] = {}  # the JPEG bytes stored with each exported item
    with store.sessions() as s:
        for item in s.query(Item).order_by(Item.id):
            post = item_post(item)
            if item.gold is not None:
                post.labels = json.loads(item.gold)
                prov: dict[str, Any] = {"source": "ximgctx queue", "kind": "gold"}
            elif agg is not None and len(answers.get(item.post_id, ())) >= min_answers:
                a = agg[item.post_id]
                unresolved["tasks"] += len(a.unresolved)
                if not a.labels:
                    unresolved["posts"] += 1
                    continue
                post.labels = dict(a.labels)
                prov = {
                    "source": "ximgctx queue",
                    "kind": "votes",
                    "method": method,
                    "labelers": len(answers[item.post_id]),
                    "votes": dict(a.votes),
                    "agreement": {k: round(v, 6) for k, v in a.agreement.items()},
                }
                if a.unresolved:
                    prov["unresolved"] = list(a.unresolved)
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
        "votes": len(plain),  # task votes read (one labeler, one task, one post)
        "method": method,
        "unresolved": unresolved,  # posts left out, and tasks without a label, because their votes tie
        "dropped": {k: v for k, v in governed.audit.dropped_posts.items() if v},
    }
