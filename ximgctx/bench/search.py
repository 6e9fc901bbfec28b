"""Search quality and speed: IVF recall@k against exact search, and queries per second, per nprobe.

Vectors are synthetic unless ``--model`` and ``--data`` are given: a mixture of ``--clusters`` Gaussian
clusters on the unit sphere (real post embeddings are clustered by topic and format; uniform random
vectors would be the unrealistic worst case for IVF). Queries are fresh draws from the same mixture.
Both indexes are built through :class:`ximgctx.SearchIndex` (the shipped code path, cosine by normalised
inner product). Recall@k is the share of the exact top-k that the IVF top-k finds, averaged over queries;
it is also measured with a label filter (``where``) keeping about 10% of the posts, since filtered IVF
search meets fewer matching vectors per cell: at fixed ``nprobe`` values, and at the index's default,
which scales ``nprobe`` up by the filter's selectivity.

With ``--model DIR --data FILE`` the vectors are that model's embeddings of those posts (``--space``),
and the queries are the first ``--queries`` posts' own vectors ("more like this", self excluded).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from ximgctx._extras import require


def _synthetic(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(n: int) -> np.ndarray:
        c = centres[rng.integers(0, args.clusters, n)]
        x = c + args.spread * rng.standard_normal((n, args.dim)).astype(np.float32) / np.sqrt(args.dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(args.n), draw(args.queries)


def _recall(exact: list[list[Any]], approx: list[list[Any]], k: int) -> float:
    per = []
    for e, a in zip(exact, approx, strict=True):
        truth = {h.id for h in e[:k]}
        if truth:
            per.append(len(truth & {h.id for h in a[:k]}) / len(truth))
    return float(np.mean(per)) if per else float("nan")


def _vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[int] | None, dict[str, Any]]:
    """The corpus (N, D), the queries, the row each query leaves out of its hits, and where they came from:
    a model's embeddings of ``--data`` posts (the first posts are the queries), or synthetic clusters."""
    if not args.model:
        x, queries = _synthetic(args)
        return x, queries, None, {"synthetic": True, "clusters": args.clusters, "spread": args.spread}
    from ximgctx.data.io import load_posts
    from ximgctx.inference.predictor import Predictor

    if not args.data:
        raise SystemExit("--model needs --data")
    predictor = Predictor.from_pretrained(args.model)
    x = predictor.embed(load_posts(args.data), space=args.space, normalize=True)
    queries = x[: args.queries]
    return (
        x,
        queries,
        list(range(len(queries))),
        {"model": args.model, "data": args.data, "space": args.space},
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ximgctx.inference.search import SearchIndex, default_nlist

    rng = np.random.default_rng(args.seed + 1)
    x, queries, exclude, source = _vectors(args)
    n, dim = x.shape
    # a filter label on ~10% of the posts, independent of the clusters
    draws = [float(r) for r in rng.random(int(n))]
    records: list[dict[str, Any]] = [
        {"id": f"v{i}", "labels": {"tag": ["rare"] if r < 0.1 else []}} for i, r in enumerate(draws)
    ]
    tasks = {"tag": ["rare"]}
    rows = np.arange(n)

    start = time.perf_counter()
    exact = SearchIndex.from_vectors(records, {"fused": (rows, x)}, tasks=tasks, mode="exact")
    exact_build = time.perf_counter() - start
    nlist = args.nlist or default_nlist(n)
    start = time.perf_counter()
    ivf = SearchIndex.from_vectors(records, {"fused": (rows, x)}, tasks=tasks, mode="ivf", nlist=nlist)
    ivf_build = time.perf_counter() - start

    def timed(index: SearchIndex, **kw: Any) -> tuple[list[list[Any]], float]:
        """Hits and queries/second: one untimed run, then the best of three (exact search's BLAS threads
        keep spinning for a while after a call, which would otherwise slow whatever is timed next)."""
        hits = index.search_vectors(queries, space="fused", k=args.k, exclude=exclude, **kw)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            index.search_vectors(queries, space="fused", k=args.k, exclude=exclude, **kw)
            best = min(best, time.perf_counter() - start)
        return hits, len(queries) / best

    truth, exact_qps = timed(exact)
    truth_f, exact_qps_f = timed(exact, where=["tag=rare"])
    results = []
    for nprobe in [int(v) for v in str(args.nprobes).split(",") if v.strip()]:
        nprobe = min(nprobe, nlist)
        hits, qps = timed(ivf, nprobe=nprobe)
        hits_f, qps_f = timed(ivf, nprobe=nprobe, where=["tag=rare"])
        results.append(
            {
                "nprobe": nprobe,
                f"recall@{args.k}": round(_recall(truth, hits, args.k), 4),
                "qps": round(qps, 1),
                f"filtered_recall@{args.k}": round(_recall(truth_f, hits_f, args.k), 4),
                "filtered_qps": round(qps_f, 1),
            }
        )
    # the default path: the index's nprobe, scaled up for the filter's selectivity
    hits_d, qps_d = timed(ivf, where=["tag=rare"])
    default_filtered = {
        "nprobe": ivf.nprobe,
        f"filtered_recall@{args.k}": round(_recall(truth_f, hits_d, args.k), 4),
        "filtered_qps": round(qps_d, 1),
    }
    faiss = require("faiss", feature="ximgctx bench search")
    return {
        "source": source,
        "n": n,
        "dim": dim,
        "queries": len(queries),
        "k": args.k,
        "nlist": nlist,
        "filter_share": round(float(np.mean([bool(r["labels"]["tag"]) for r in records])), 4),
        "build_seconds": {"exact": round(exact_build, 3), "ivf": round(ivf_build, 3)},
        "exact_qps": round(exact_qps, 1),
        "exact_filtered_qps": round(exact_qps_f, 1),
        "ivf": results,
        "ivf_filtered_default_nprobe": default_filtered,
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
    }
