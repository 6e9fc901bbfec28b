"""A real ``ximgctx serve`` process on 127.0.0.1 swaps model A for model B on ``POST /admin/reload`` while
two clients send moderations throughout: no request fails, every response names A or B, every request sent
after the reload answered is B's, and each response's scores are those of the model it names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ximgctx import Post
from ximgctx.inference import Predictor
from ximgctx.inference.moderation import Moderator

from .._queue_fixtures import wait_port
from .._serve_fixtures import stop_processes
from ._swap_fixtures import digest, model_root, served_name

pytestmark = pytest.mark.usefixtures("one_thread")

ADMIN = "admin-key-0123456789abcd"
CLIENT = "client-key-0123456789abc"
TEXTS = ["see you all saturday", "never again", "when monday hits", "rain again"]
ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 180.0  # the whole exchange, whatever the machine's load
MAX_REQUESTS = 4000  # per client
AFTER = 30  # requests each client sends after the reload answered


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected(name: str) -> dict[str, dict[str, float]]:
    moderator = Moderator(Predictor.from_pretrained(model_root() / name, device="cpu"))
    out = {}
    for text in TEXTS:
        (result,) = moderator.moderate([Post(id="x", text=text)])
        out[text] = {k: float(v) for k, v in result.category_scores.items()}
    return out


def test_a_reload_under_load_fails_no_request_and_answers_with_the_named_model(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{CLIENT} moderate\n{ADMIN} admin name=ops\n", encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "ximgctx.cli", "serve", "--model", str(model_root() / "a")]
        + ["--api-key-file", str(keys), "--port", str(port), "--device", "cpu"]
        + ["--model-root", str(model_root()), "--explain", "none"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    expected = {served_name("a"): _expected("a"), served_name("b"): _expected("b")}
    records: list[tuple[float, str, int, dict]] = []  # (sent at, text, status, body)
    reloaded_at: list[float] = []
    stop = threading.Event()
    deadline = time.monotonic() + DEADLINE_S

    def client(offset: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {CLIENT}"}, timeout=60) as http:
            for i in range(MAX_REQUESTS):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                text = TEXTS[(i + offset) % len(TEXTS)]
                sent = time.monotonic()
                try:
                    resp = http.post(f"{url}/v1/moderations", json={"input": text})
                    records.append((sent, text, resp.status_code, resp.json()))
                except httpx.HTTPError as e:
                    records.append((sent, text, 0, {"error": repr(e)}))
                if reloaded_at and sum(1 for r in records if r[0] > reloaded_at[0]) >= 2 * AFTER:
                    return

    try:
        wait_port(url, proc=proc)
        denied = httpx.post(
            f"{url}/admin/reload", json={"model": "b"}, headers={"Authorization": f"Bearer {CLIENT}"}
        )
        assert denied.status_code == 403
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(2)]
        for t in threads:
            t.start()
        while len(records) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(records)
        start = time.monotonic()
        resp = httpx.post(
            f"{url}/admin/reload",
            json={"model": "b", "version": "2", "expected_sha256": digest("b")},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=120,
        )
        reloaded_at.append(time.monotonic())
        assert resp.status_code == 200, resp.text
        during = len(records) - before
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        stop.set()
        ready = httpx.get(f"{url}/readyz").json()
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    finally:
        stop.set()
        stop_processes([proc])
        log.close()

    failed = [r for r in records if r[2] != 200]
    assert not failed, failed[:3]
    names = [r[3]["model"] for r in records]
    assert set(names) == {served_name("a"), served_name("b")}
    after = [r for r in records if r[0] > reloaded_at[0]]
    assert len(after) >= 2 * AFTER and all(r[3]["model"] == served_name("b") for r in after)
    assert all(r[3]["model_version"] == "2" for r in records if r[3]["model"] == served_name("b"))
    for _, text, _, body in records:  # every response has the scores of the model it names
        got = body["results"][0]["ximgctx"]["category_scores"]
        assert got == pytest.approx(expected[body["model"]][text], abs=1e-5), (body["model"], text)
    assert (ready["model"], ready["version"]) == (served_name("b"), "2")
    assert ready["previous"]["name"] == served_name("a") and ready["draining"] == []
    assert 'ximgctx_model_swaps_total{outcome="ok"} 1.0' in metrics
    swap = resp.json()
    print(
        f"\nhot swap under load: reload answered in {reloaded_at[0] - start:.2f} s "
        f"(swap {swap['seconds']} s); "
        f"{during} requests answered during it; {len(records)} requests in all, "
        f"{names.count(served_name('a'))} by A and {names.count(served_name('b'))} by B, 0 failed"
    )
