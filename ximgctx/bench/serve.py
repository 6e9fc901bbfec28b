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

Then the same robustness run with ``--hostile`` of all requests hostile, sent under another API key by
``--hostile-clients`` threads, interleaved with the well-formed ones (each waits until the 8 clients reach
its place in the plan): slow hosts (an allowed image host on 127.0.0.1 that sends one byte a second; the
server's fetch deadline ends them with 400), decode-heavy images (a 6000x6000 one-colour PNG, 36 Mpx in
about 120 KB: admitted within the key's decode budget, 429 beyond it) and URL floods (2,000 image URLs in
one request: 400 before any fetch; the image host counts their connections, which must stay 0). Reported:
every well-formed request answered 200, and the p99 latency of the well-formed ones under attack against the
same run without it (clean runs before and after; the ratio is to their mean; the target is <= 2).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import secrets
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


class _ImageHost:
    """An image host on 127.0.0.1 for the hostile run: ``/slow`` answers headers then one byte a second (up
    to ``slow_bytes``), anything else 404; connections are counted by path. Stopped with :meth:`close`."""

    def __init__(self, slow_bytes: int = 60) -> None:
        self.slow_bytes = slow_bytes
        self.by_path: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                words = head.split(b" ", 2)
                path = words[1].decode("latin-1").split("?")[0] if len(words) > 1 else "/"
                with self._lock:
                    self.by_path[path] = self.by_path.get(path, 0) + 1
                if path != "/slow":
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(self.slow_bytes):
                    if self._stop.wait(1.0):
                        return
                    conn.sendall(b"\x89")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _hostile_bodies(port: int) -> dict[str, bytes]:
    """One request of each hostile kind (see the module)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), (30, 120, 200)).save(buf, format="PNG")
    heavy = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    def post(url: str) -> bytes:
        parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
        return json.dumps({"input": parts}).encode()

    flood = [
        {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{port}/img.png?{i}"}}
        for i in range(2000)
    ]
    return {
        "slow_host": post(f"http://127.0.0.1:{port}/slow"),
        "decode_heavy": post(heavy),
        "url_flood": json.dumps({"input": [{"type": "text", "text": "x"}, *flood]}).encode(),
    }


def _reached(sent: dict[str, int], place: int) -> bool:
    return sent["plan"] >= place


#: what a hostile request may be answered (anything else is a wrong answer)
_HOSTILE_OK = {"slow_host": {400}, "decode_heavy": {200, 429}, "url_flood": {400}}


def _drive(url: str, bodies: list[bytes], clients: int, seconds: float, key: str) -> dict[str, Any]:
    httpx = require("httpx", feature="ximgctx bench serve")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
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
                r = client.post(f"{url}/v1/moderations", content=body, headers=headers)
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


def _mixed(
    url: str,
    bodies: list[bytes],
    n: int,
    share: float,
    seed: int,
    keys: tuple[str, str],
    hostile: dict[str, bytes] | None = None,
    hostile_share: float = 0.0,
    hostile_clients: int = 16,
) -> dict[str, Any]:
    """``n`` requests at 8 clients, ``share`` of them malformed; with ``hostile``, hostile requests making
    ``hostile_share`` of all requests, sent by their own clients under the second key, each when the 8
    clients reach its place in the plan (the same well-formed load, with an attack mixed in)."""
    httpx = require("httpx", feature="ximgctx bench serve")
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, bytes]] = []
    for i in range(n):
        if rng.random() < share:
            kind, body, _ = _MALFORMED[int(rng.integers(len(_MALFORMED)))]
            plan.append((kind, body))
        else:
            plan.append(("ok", bodies[i % len(bodies)]))
    attacks: list[tuple[int, str, bytes]] = []  # (place in the plan, kind, body)
    if hostile:
        count = round(n * hostile_share / (1 - hostile_share))
        kinds = sorted(hostile)
        hrng = np.random.default_rng(seed + 1)
        places = sorted(int(x) for x in hrng.integers(0, n, count))
        attacks = [(p, kinds[j % len(kinds)], hostile[kinds[j % len(kinds)]]) for j, p in enumerate(places)]
    outcome: dict[str, dict[str, int]] = {}
    unclear: list[str] = []
    ok_latencies: list[float] = []
    lock = threading.Lock()
    progress = threading.Condition(lock)
    sent = {"plan": 0, "attacks": 0}

    def record(kind: str, status: int, good: bool) -> None:
        row = outcome.setdefault(kind, {})
        row[str(status)] = row.get(str(status), 0) + 1
        if not good:
            unclear.append(f"{kind}: HTTP {status}")

    def worker() -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {keys[0]}"}
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if sent["plan"] >= len(plan):
                        progress.notify_all()
                        return
                    kind, body = plan[sent["plan"]]
                    sent["plan"] += 1
                    progress.notify_all()
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/moderations", content=body, headers=headers)
                dt = time.perf_counter() - t0
                good = r.status_code == 200 if kind == "ok" else 400 <= r.status_code < 500
                if kind != "ok" and good:
                    good = bool(r.json().get("error", {}).get("message"))
                with lock:
                    record(kind, r.status_code, good)
                    if kind == "ok":
                        ok_latencies.append(dt)

    def attacker() -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {keys[1]}"}
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if sent["attacks"] >= len(attacks):
                        return
                    place, kind, body = attacks[sent["attacks"]]
                    sent["attacks"] += 1
                    progress.wait_for(functools.partial(_reached, sent, min(place, len(plan))), timeout=600)
                r = client.post(f"{url}/v1/moderations", content=body, headers=headers)
                good = r.status_code in _HOSTILE_OK[kind]
                if good and r.status_code != 200:
                    good = bool(r.json().get("error", {}).get("message"))
                    if r.status_code == 429:
                        good = good and "retry-after" in r.headers
                with lock:
                    record(kind, r.status_code, good)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    threads += [threading.Thread(target=attacker) for _ in range(hostile_clients if attacks else 0)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = np.percentile(ok_latencies, [50, 95, 99]) if ok_latencies else [float("nan")] * 3
    well_formed = sum(1 for k, _ in plan if k == "ok")
    return {
        "requests": n + len(attacks),
        "well_formed": well_formed,
        "well_formed_answered_200": outcome.get("ok", {}).get("200", 0),
        "hostile": len(attacks),
        "seconds": wall,
        "well_formed_latency_ms": {"p50": 1000 * q[0], "p95": 1000 * q[1], "p99": 1000 * q[2]},
        "by_kind": outcome,
        "wrong_answers": unclear[:20],
        "wrong_count": len(unclear),
    }


def _serve(
    model_dir: Path, port: int, args: argparse.Namespace, key_file: Path, image_port: int
) -> subprocess.Popen:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable, "-m", "ximgctx.cli", "serve", "--model", str(model_dir),
        "--api-key-file", str(key_file), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
        "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
        "--explain", "flagged",
        # the hostile run's image host is on loopback: allowed here, as an operator would allow a CDN
        "--allow-url-host", f"127.0.0.1:{image_port}", "--allow-url-network", "127.0.0.1/32",
        "--url-timeout-s", str(args.url_timeout_s), "--max-request-pixels", str(args.max_request_pixels),
        "--pixel-rate", str(args.pixel_rate), "--pixel-burst", str(args.pixel_burst),
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
        keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        key_file = folder / "keys.txt"
        key_file.write_text(f"{keys[0]} moderate name=clients\n{keys[1]} moderate name=hostile\n")
        image_host = _ImageHost()
        hostile_bodies = _hostile_bodies(image_host.port)
        proc = _serve(model_dir, port, args, key_file, image_host.port)
        try:
            _wait_ready(url, proc)
            rss_ready = _rss_mb(proc.pid)
            served = [_drive(url, bodies, c, args.seconds, keys[0]) for c in levels]
            rss_before_mixed = _rss_mb(proc.pid)
            mixed = _mixed(url, bodies, args.mixed, args.malformed, args.seed, keys)
            rss_after_mixed = _rss_mb(proc.pid)
            under_attack = _mixed(
                url, bodies, args.mixed, args.malformed, args.seed, keys,
                hostile=hostile_bodies, hostile_share=args.hostile, hostile_clients=args.hostile_clients,
            )  # fmt: skip
            clean_after = _mixed(url, bodies, args.mixed, args.malformed, args.seed, keys)
            peak = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            image_host.close()
        offline.append(_offline(model_dir, posts, args.max_batch_size))
    reference = statistics.median(offline)
    for row in served:
        row["ratio_to_offline"] = row["posts_per_s"] / reference
    clean_p99 = [r["well_formed_latency_ms"]["p99"] for r in (mixed, clean_after)]
    hostile = {
        "share": args.hostile,
        "hostile_clients": args.hostile_clients,
        "server_limits": {
            "url_timeout_s": args.url_timeout_s,
            "max_request_pixels": args.max_request_pixels,
            "pixel_rate": args.pixel_rate,
            "pixel_burst": args.pixel_burst,
        },
        "clean_before": mixed,
        "under_attack": under_attack,
        "clean_after": clean_after,
        "every_well_formed_answered": under_attack["well_formed_answered_200"] == under_attack["well_formed"],
        "p99_ratio": under_attack["well_formed_latency_ms"]["p99"] / statistics.mean(clean_p99),
        "p99_target": 2.0,
        "flood_fetches": image_host.by_path.get("/img.png", 0),  # URLs of floods: never fetched
        "slow_fetches": image_host.by_path.get("/slow", 0),
    }
    return {
        "arch": args.arch,
        "replies": args.replies,
        "max_batch_size": args.max_batch_size,
        "offline_posts_per_s": {"runs": offline, "median": reference},
        "served": served,
        "mixed": mixed,
        "hostile": hostile,
        "server_rss_mb": {
            "ready": rss_ready,
            "before_mixed": rss_before_mixed,
            "after_mixed": rss_after_mixed,
            "peak": peak,
        },
    }
