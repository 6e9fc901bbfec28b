"""``ximgctx serve --registry-root`` follows the model registry: it serves the promoted version, picks up a
promotion (made through the registry's Python API, as ``ximgctx loop`` does) at its next poll, and a
rollback brings back the previous version's exact outputs; no request fails meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ximgctx import Post
from ximgctx.inference import Predictor
from ximgctx.inference.moderation import Moderator
from ximgctx.queue.registry import Registry

from .._queue_fixtures import KEY, make_store, wait_port
from .._serve_fixtures import stop_processes
from ._swap_fixtures import model_root, served_name
from .test_hot_swap_process import _free_port

pytestmark = pytest.mark.usefixtures("one_thread")

POLL_S = 0.2
DEADLINE_S = 90.0
TEXTS = ["see you all saturday", "never again"]
ROOT = Path(__file__).resolve().parents[2]


def _moderate(url: str) -> dict:
    resp = httpx.post(f"{url}/v1/moderations", json={"input": TEXTS}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _scores(body: dict) -> list[dict[str, float]]:
    return [r["ximgctx"]["category_scores"] for r in body["results"]]


def _wait_version(url: str, version: str) -> float:
    """Seconds until /readyz reports ``version`` (fails at the deadline); answers keep coming meanwhile."""
    start = time.monotonic()
    while time.monotonic() - start < DEADLINE_S:
        if httpx.get(f"{url}/readyz", timeout=10).json()["version"] == version:
            return time.monotonic() - start
        _moderate(url)  # requests during the swap must not fail
    raise AssertionError(f"the server did not serve version {version} within {DEADLINE_S} s")


def test_the_server_follows_promotions_and_rollbacks_of_the_registry(tmp_path):
    store = make_store(str(tmp_path / "loop.sqlite"))
    registry = Registry(store, tmp_path / "registry")
    v1 = registry.adopt(model_root() / "a", who="ops")
    v2 = registry.register(model_root() / "b", parent=v1.version, who="loop")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "ximgctx.cli", "serve", "--registry-root", str(tmp_path / "registry")]
        + ["--loop-db", str(tmp_path / "loop.sqlite"), "--no-auth", "--port", str(port), "--device", "cpu"]
        + ["--state-poll-s", str(POLL_S), "--explain", "none"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        | {"XIMGCTX_QUEUE_KEY": KEY.decode()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(url, proc=proc)
        ready = httpx.get(f"{url}/readyz").json()
        assert (ready["model"], ready["version"], ready["digest"]) == (served_name("a"), "1", v1.digest)
        first = _moderate(url)
        assert (first["model"], first["model_version"]) == (served_name("a"), "1")

        registry.promote(v2.version, who="ops", why="the gate passed")
        promoted_in = _wait_version(url, "2")
        on_b = _moderate(url)
        assert (on_b["model"], on_b["model_version"]) == (served_name("b"), "2")
        moderator = Moderator(Predictor.from_pretrained(v2.path, device="cpu"))
        expected = moderator.moderate([Post(id=str(i), text=t) for i, t in enumerate(TEXTS)])
        for got, want in zip(_scores(on_b), expected, strict=True):
            assert got == pytest.approx({k: float(v) for k, v in want.category_scores.items()}, abs=1e-6)
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["previous"]["version"] == "1" and ready["digest"] == v2.digest

        registry.rollback(who="ops", why="a regression in production")
        rolled_back_in = _wait_version(url, "1")
        again = _moderate(url)
        assert (again["model"], again["model_version"]) == (served_name("a"), "1")
        assert _scores(again) == _scores(first)  # the previous version's exact outputs
        # an empty reload asks the registry: the promoted version is served already
        same = httpx.post(f"{url}/admin/reload", timeout=60).json()
        assert same["changed"] is False and same["model"]["version"] == "1"
        metrics = httpx.get(f"{url}/metrics").text
        assert 'ximgctx_model_swaps_total{outcome="ok"} 2.0' in metrics
        assert 'ximgctx_model_swaps_total{outcome="failed"}' not in metrics
    finally:
        stop_processes([proc])
        log.close()
        store.close()
    print(
        f"\nregistry: promotion served after {promoted_in:.2f} s, rollback after {rolled_back_in:.2f} s "
        f"(poll every {POLL_S} s)"
    )
