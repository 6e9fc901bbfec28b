"""Service throughput: ``ximgctx serve`` under 1, 8 and 32 concurrent clients against the offline Predictor.

The same posts (JPEGs sent as base64 data URLs, a post text, ``--replies`` replies in the ``ximgctx``
extension field) go through two paths in one run:

1. ``offline``: :class:`ximgctx.Moderator` over the posts in batches of ``--max-batch-size`` (the posts read
   from files, as a batch job does), timed before and after the server runs (the median is the reference);
2. ``served``: a real ``ximgctx serve`` process on 127.0.0.1 (a free port, no auth: loopback), driven by
   ``N`` client threads, each sending one post per ``POST /v1/moderations`` and waiting for the answer, for
   ``--seconds`` per level (bounded in time and count). Request bodies are encoded once beforehand so the
   clients spend little of the shared CPU.

Then a robustness run: ``--mixed`` requests at 8 clients, ``--malformed`` of them malformed in ten ways
(broken JSON, wrong types, a path or file:// URL as the image, bad base64, an oversized body, a missing
key...): every well-formed request must be answered 200 and every malformed one a 4xx with a message; the
server's RSS is sampled before and after. Reported: posts/s, latency p50/p95/p99, the ratio served/offline
per level, peak RSS of the server process (VmHWM), errors by kind.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ximgctx._extras import require

_MALFORMED: list[tuple[str, bytes, dict[str, str]]] = [
    ("broken_json", b'{"input": "x"', {}),
    ("wrong_type", b'{"input": 42}', {}),
    ("empty_list", b'{"input": []}', {}),
    ("unknown_part", b'{"input": [{"type": "audio", "audio": "x"}]}', {}),
    ("path_image", b'{"input": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}', {}),
    ("file_url", b'{"input": [{"type": "image_url", "image_url": {"url": "file:///etc/shadow"}}]}', {}),
    (
        "bad_base64",
        b'{"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}',
        {},
    ),
    ("replies_not_list", b'{"input": "x", "ximgctx": {"replies": 7}}', {}),
    ("missing_input", b'{"model": "x"}', {}),
    ("oversized", b'{"input": "' + b"x" * (9 << 20) + b'"}', {}),
]


def _model(arch: str, folder: Path) -> Path:
    import torch

    from ximgctx import ContextModel, EncoderConfig, FusionConfig, ModelConfig, TaskSpec

    torch.manual_seed(0)
    tasks = [
        TaskSpec("objects", ["circle", "square", "star"], kind="multilabel", source="image"),
        TaskSpec("meaning", ["literal", "ironic", "symbolic"]),
        TaskSpec("intent", ["joke", "protest", "threat", "meme"], kind="multilabel"),
    ]
    model = ContextModel(ModelConfig(tasks=tasks, encoder=EncoderConfig(arch=arch), fusion=FusionConfig()))
    return model.save_pretrained(folder / "model")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _bodies(posts: list[Any]) -> list[bytes]:
    out = []
    for p in posts:
        url = "data:image/jpeg;base64," + base64.b64encode(Path(p.image).read_bytes()).decode()
        body = {
            "input": [{"type": "text", "text": p.text}, {"type": "image_url", "image_url": {"url": url}}],
            "ximgctx": {"id": p.id, "replies": [r.text for r in p.replies]},
        }
        out.append(json.dumps(body).encode())
    return out


def _offline(model_dir: Path, posts: list[Any], batch_size: int, rounds: int = 3) -> float:
    """Posts/s of the median of ``rounds`` passes over the posts, after one warm-up pass (the first pass
    meets every new tensor shape, which the CPU kernels prepare once, as a long-running server has)."""
    from ximgctx.inference import Moderator, Predictor

    moderator = Moderator(Predictor.from_pretrained(model_dir, device="cpu", batch_size=batch_size))
    moderator.moderate(posts)  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        moderator.moderate(posts)
        times.append(time.perf_counter() - start)
    return len(posts) / statistics.median(times)


def _drive(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    httpx = require("httpx", feature="ximgctx bench serve")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while time.perf_counter() < stop:
                body = bodies[next(counter) % len(bodies)]
                t0 = time.perf_counter()
                r = client.post(
                    f"{url}/v1/moderations", content=body, headers={"Content-Type": "application/json"}
                )
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = statuses.get("200", 0)
    q = np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {
        "clients": clients,
        "requests": len(latencies),
        "statuses": statuses,
        "posts_per_s": ok / wall,
        "latency_ms": {"p50": 1000 * q[0], "p95": 1000 * q[1], "p99": 1000 * q[2]},
    }


def _mixed(url: str, bodies: list[bytes], n: int, share: float, seed: int) -> dict[str, Any]:
    httpx = require("httpx", feature="ximgctx bench serve")
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, bytes]] = []
    for i in range(n):
        if rng.random() < share:
            kind, body, _ = _MALFORMED[int(rng.integers(len(_MALFORMED)))]
            plan.append((kind, body))
        else:
            plan.append(("ok", bodies[i % len(bodies)]))
    outcome: dict[str, dict[str, int]] = {}
    unclear: list[str] = []
    lock = threading.Lock()
    items = iter(plan)

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                kind, body = item
                r = client.post(
                    f"{url}/v1/moderations", content=body, headers={"Content-Type": "application/json"}
                )
                good = r.status_code == 200 if kind == "ok" else 400 <= r.status_code < 500
                if kind != "ok" and good:
                    good = bool(r.json().get("error", {}).get("message"))
                with lock:
                    row = outcome.setdefault(kind, {})
                    row[str(r.status_code)] = row.get(str(r.status_code), 0) + 1
                    if not good:
                        unclear.append(f"{kind}: HTTP {r.status_code}")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": n, "by_kind": outcome, "wrong_answers": unclear[:20], "wrong_count": len(unclear)}


def _serve(model_dir: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable, "-m", "ximgctx.cli", "serve", "--model", str(model_dir), "--no-auth",
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
        "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
        "--explain", "flagged",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    httpx = require("httpx", feature="ximgctx bench serve")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server was not ready in time")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ximgctx.bench.inference import _make_posts

    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="ximgctx-bench-serve-") as tmp:
        folder = Path(tmp)
        (folder / "img").mkdir()
        posts = _make_posts(folder / "img", args.n, args.replies, args.image_size, args.seed)
        model_dir = _model(args.arch, folder)
        bodies = _bodies(posts)
        offline = [_offline(model_dir, posts, args.max_batch_size)]
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _serve(model_dir, port, args)
        try:
            _wait_ready(url, proc)
            rss_ready = _rss_mb(proc.pid)
            served = [_drive(url, bodies, c, args.seconds) for c in levels]
            rss_before_mixed = _rss_mb(proc.pid)
            mixed = _mixed(url, bodies, args.mixed, args.malformed, args.seed)
            rss_after_mixed = _rss_mb(proc.pid)
            peak = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        offline.append(_offline(model_dir, posts, args.max_batch_size))
    reference = statistics.median(offline)
    for row in served:
        row["ratio_to_offline"] = row["posts_per_s"] / reference
    return {
        "arch": args.arch,
        "replies": args.replies,
        "max_batch_size": args.max_batch_size,
        "offline_posts_per_s": {"runs": offline, "median": reference},
        "served": served,
        "mixed": mixed,
        "server_rss_mb": {
            "ready": rss_ready,
            "before_mixed": rss_before_mixed,
            "after_mixed": rss_after_mixed,
            "peak": peak,
        },
    }
