"""The learning loop end to end, as an operator runs it: one ``ximgctx queue serve`` process on 127.0.0.1
(moderation, the labeling queue and the registry's promoted model, one SQLite store), posts queued and voted
on through its HTTP routes, ``ximgctx loop run`` twice and ``ximgctx loop rollback`` as separate processes,
and a client sending moderation requests throughout.

- Round 1: two labelers agree (k = 2) on every post, against the serving model's own ``meaning`` predictions;
  the frozen holdout carries the same labels, so the warm-started candidate can only gain on it. The gate
  promotes it and the server swaps to it without a restart: its answers then equal the candidate folder's
  in-process predictions, and no request failed during the swap.
- Round 2: a reviewer's feedback relabels the posts with the serving model's original predictions (flipped
  against the holdout): the gate refuses that candidate and the served version does not change.
- ``loop rollback`` promotes version 1 again: the server's answers are exactly the ones it gave before
  round 1.

The holdout trick (labels against the first model's predictions) makes the gate's answers known without
hoping a tiny model learns anything in particular."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pytest

from ximgctx import Post, write_posts
from ximgctx.inference import Predictor
from ximgctx.inference.memory import LabelMemory
from ximgctx.queue.loop import LoopState
from ximgctx.queue.registry import Registry

from .._inference_fixtures import make_posts, model_dir, tiny_config
from .._queue_fixtures import KEY, make_store, wait_port
from .._serve_fixtures import stop_processes

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
MODERATOR = "moderator-key-0123456789"
REVIEWER = "reviewer-key-0123456789a"
ADMIN = "admin-key-0123456789abcd"
MEANINGS = ["literal", "ironic", "symbolic"]
N = 20
POLL_S = 0.2
DEADLINE_S = 120.0  # every wait in the test ends by this (the swap itself takes well under a second)


@cache
def world() -> tuple[list[Post], list[str]]:
    """Public posts with images, and the first model's ``meaning`` prediction for each."""
    posts = [p for p in make_posts(2 * N, seed=23, folder="loop-e2e") if p.image][:N]
    assert len(posts) == N
    for i, p in enumerate(posts):
        p.meta = {"visibility": "public", "author": f"author{i % 5}"}
        p.labels = {}
    preds = Predictor.from_pretrained(model_dir(), device="cpu").predict(posts)
    return posts, [pr.tasks["meaning"].labels[0] for pr in preds]


def against(label: str) -> str:
    return MEANINGS[(MEANINGS.index(label) + 1) % 3]


def _data_url(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _record(post: Post) -> dict:
    return {
        "id": post.id,
        "text": post.text,
        "image": _data_url(str(post.image)),
        "replies": [{"text": r.text} for r in post.replies],
        "meta": dict(post.meta),
    }


def _request(post: Post) -> dict:
    return {
        "input": [
            {"type": "text", "text": post.text},
            {"type": "image_url", "image_url": {"url": _data_url(str(post.image))}},
        ],
        "ximgctx": {"replies": [r.text for r in post.replies]},
    }


def _ask(c: httpx.Client, route: str, posts: list[Post]) -> list[dict]:
    """One request per post; the answers without their request ids."""
    out = []
    for p in posts:
        r = c.post(route, json=_request(p), headers={"Authorization": f"Bearer {MODERATOR}"})
        assert r.status_code == 200, r.text
        out.append({k: v for k, v in r.json().items() if k != "id"})
    return out


def _vote_all(c: httpx.Client, tokens: list[str], meaning_by_text: dict[str, str]) -> int:
    """Each labeler leases and votes until the queue has nothing more for them; returns the votes cast."""
    votes = 0
    for token in tokens:
        lab = {"Authorization": f"Bearer {token}"}
        for _ in range(2 * N):
            item = c.post("/v1/queue/lease", headers=lab).json()["item"]
            if item is None:
                break
            labels = {"meaning": meaning_by_text[item["post"]["text"]]}
            r = c.post(f"/v1/queue/items/{item['item_id']}/vote", headers=lab, json={"labels": labels})
            assert r.status_code == 200, r.text
            votes += 1
    return votes


def _as_served(predictor: Predictor, store) -> Predictor:  # noqa: ANN001
    """``predictor`` with the label memory a server derives for it from the store: the effective labels,
    centred on the centre the loop stored for that model (the round stores one for every version)."""
    loop = LoopState(store)
    center = loop.memory_center(predictor.model_digest)
    assert center is not None, "the round stored no memory centre for the new version"
    _, entries = loop.effective()
    memory = LabelMemory.for_predictor(predictor)
    memory.center = np.asarray(center, dtype=np.float32)
    memory.add_embeddings(
        [e.entry_id for e in entries],
        predictor.embed([e.post for e in entries]),
        [e.labels for e in entries],
        [e.post.to_dict() for e in entries],
        [memory.author_digests(e.post) for e in entries],
    )
    predictor.memory = memory
    return predictor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client(threading.Thread):
    """Sends one post per /v1/moderations request until stopped (bounded by a count and the deadline);
    records each answer's served model and every failure."""

    def __init__(self, url: str, posts: list[Post]) -> None:
        super().__init__(daemon=True)
        self.url, self.posts = url, posts
        self.stop = threading.Event()
        self.models: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        end = time.monotonic() + 6 * DEADLINE_S
        headers = {"Authorization": f"Bearer {MODERATOR}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as c:
            i = 0
            while not self.stop.is_set() and time.monotonic() < end and i < 20_000:
                post = self.posts[i % len(self.posts)]
                i += 1
                try:
                    r = c.post("/v1/moderations", json=_request(post))
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")
                    else:
                        self.models.append(r.json()["model"])
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "ximgctx.cli", *cmd], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, f"ximgctx {' '.join(cmd)}: {out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(out.stdout[out.stdout.index("{") :])


def test_votes_to_a_promoted_model_served_without_restart_a_refused_round_and_a_rollback(tmp_path):
    posts, teacher = world()
    db, registry_root = tmp_path / "loop.sqlite", tmp_path / "registry"
    (tmp_path / "queue.key").write_bytes(KEY)
    (tmp_path / "keys.txt").write_text(f"{MODERATOR}\n{REVIEWER} review name=rita\n{ADMIN} admin name=ops\n")
    holdout = tmp_path / "holdout.jsonl"
    write_posts(
        [
            Post(p.id, p.image, p.text, list(p.replies), {"meaning": against(t)}, dict(p.meta))
            for p, t in zip(posts, teacher, strict=True)
        ],
        holdout,
    )
    (tmp_path / "experiment.yaml").write_text(
        json.dumps(
            {
                "model": tiny_config().to_dict(),
                "train": {
                    "batch_size": 4,
                    "max_steps": 12,
                    "eval_every": 12,
                    "save_every": 12,
                    "eval_batch_size": 8,
                    "progress_bar": False,
                    "tensorboard": False,
                    "optim": {"lr": {"lora": 3e-2, "fusion": 3e-2, "heads": 5e-2}, "warmup_steps": 0},
                },
            }
        )
    )
    (tmp_path / "loop.yaml").write_text(
        json.dumps(
            {
                "loop_db": str(db),
                "queue_key_file": str(tmp_path / "queue.key"),
                "registry_root": str(registry_root),
                "experiment": str(tmp_path / "experiment.yaml"),
                "holdout": str(holdout),
                "replay_size": 0,
                "min_new_labels": 10,
                "gate": {"metric": "task:meaning", "tolerance": 1.0},
            }
        )
    )
    store = make_store(str(db), overlap=2, gold_rate=0.0)
    tokens = {name: store.add_labeler(name) for name in ("ann", "bob")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XIMGCTX_QUEUE_KEY": KEY.decode(), "OMP_NUM_THREADS": "1"}
    adopted = _run(
        ["loop", "adopt", str(model_dir()), "--config", str(tmp_path / "loop.yaml")], env, tmp_path
    )
    assert adopted["version"] == 1
    registry = Registry(store, registry_root)
    v1 = registry.promoted()
    assert v1 is not None and v1.version == 1

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    server = subprocess.Popen(
        [sys.executable, "-m", "ximgctx.cli", "queue", "serve", "--db", str(db), "--loop-db", str(db)]
        + ["--registry-root", str(registry_root), "--api-key-file", str(tmp_path / "keys.txt")]
        + ["--port", str(port), "--state-poll-s", str(POLL_S), "--device", "cpu", "--overlap", "2"]
        + ["--gold-rate", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    client = None
    try:
        try:
            wait_port(url, DEADLINE_S, server)
        except RuntimeError as e:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from e
        admin = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=url, timeout=60) as c:
            ready = c.get("/readyz").json()
            assert str(ready.get("version")) == "1", ready
            before = _ask(c, "/v1/moderations", posts) + _ask(c, "/v1/predict", posts)
            name_v1 = before[0]["model"]
            assert v1.digest[:12] in name_v1

            # queue the posts and vote on them through the HTTP routes (k = 2 agreeing labelers)
            queued = c.post("/v1/queue/items", json={"posts": [_record(p) for p in posts]}, headers=admin)
            assert queued.status_code == 200, queued.text
            by_text = {p.text: against(t) for p, t in zip(posts, teacher, strict=True)}
            assert _vote_all(c, list(tokens.values()), by_text) == 2 * N

        client = Client(url, posts)
        client.start()
        # round 1: promoted, and served without a restart
        first = _run(["loop", "run", "--config", str(tmp_path / "loop.yaml")], env, tmp_path)
        assert first["promoted"] is True and first["version"] == 2, first
        assert first["labels"]["governed"] == N
        v2 = registry.get(2)
        assert v2.parent == 1 and v2.status == "promoted"
        with httpx.Client(base_url=url, timeout=60) as c:
            deadline = time.monotonic() + DEADLINE_S
            while str(c.get("/readyz").json().get("version")) != "2" and time.monotonic() < deadline:
                time.sleep(0.05)
            ready = c.get("/readyz").json()
            assert (
                str(ready["version"]) == "2" and str((ready.get("previous") or {}).get("version")) == "1"
            ), ready
            served = _ask(c, "/v1/predict", posts)
        name_v2 = served[0]["model"]
        assert str(served[0]["model_version"]) == "2"
        assert v2.digest[:12] in name_v2 and name_v2 != name_v1
        local = _as_served(Predictor.from_pretrained(v2.path, device="cpu"), store).predict(posts)
        for answer, pred in zip(served, local, strict=True):
            got = answer["results"][0]["tasks"]["meaning"]["scores"]
            want = pred.tasks["meaning"].scores
            assert got.keys() == want.keys()
            assert all(abs(got[k] - want[k]) < 1e-5 for k in want), (got, want)

        # round 2: ann and bob are revoked (their votes stop counting) and two new labelers vote the first
        # model's predictions on the same posts, queued again: flipped against the holdout. The gate refuses
        # that candidate and the served version stays 2.
        for name in tokens:
            assert store.revoke_labeler(name, by="ops", why="flipped-label drill")
        again = [store.add_labeler(name) for name in ("cat", "dan")]
        with httpx.Client(base_url=url, timeout=60) as c:
            records = [{**_record(p), "id": f"{p.id}-again"} for p in posts]
            queued = c.post("/v1/queue/items", json={"posts": records}, headers=admin)
            assert queued.status_code == 200 and queued.json()["added"] == N, queued.text
            flipped = {p.text: t for p, t in zip(posts, teacher, strict=True)}
            assert _vote_all(c, again, flipped) == 2 * N
        second = _run(["loop", "run", "--config", str(tmp_path / "loop.yaml")], env, tmp_path)
        assert second["promoted"] is False and second["version"] == 3 and second["serving"] == 2, second
        assert registry.get(3).status == "refused" and registry.promoted().version == 2
        assert second["verdict"]["promote"] is False and second["verdict"]["reasons"], second["verdict"]
        time.sleep(4 * POLL_S)
        with httpx.Client(base_url=url, timeout=60) as c:
            assert str(c.get("/readyz").json()["version"]) == "2"

        # rollback: version 1 again, with exactly its earlier answers
        back = _run(
            ["loop", "rollback", "--config", str(tmp_path / "loop.yaml"), "--why", "test"], env, tmp_path
        )
        assert back["promoted"] == 1, back
        with httpx.Client(base_url=url, timeout=60) as c:
            deadline = time.monotonic() + DEADLINE_S
            while str(c.get("/readyz").json().get("version")) != "1" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert str(c.get("/readyz").json()["version"]) == "1"
        # the client stops first: alone, each request is a batch of one, as before round 1 (a batch shared
        # with the client's requests could differ in the last bit)
        client.stop.set()
        client.join(timeout=DEADLINE_S)
        with httpx.Client(base_url=url, timeout=60) as c:
            after = _ask(c, "/v1/moderations", posts) + _ask(c, "/v1/predict", posts)
        for a, b in zip(after, before, strict=True):
            assert a == b, json.dumps([a, b])[:2000]  # the same model: exactly the same answers
        assert client.failures == [], client.failures[:5]
        assert set(client.models) == {name_v1, name_v2}, set(client.models)
        assert len(client.models) >= 10
        print(f"requests during the loop: {len(client.models)}, failed: {len(client.failures)}")
    finally:
        if client is not None:
            client.stop.set()
        stop_processes([server])
        log.close()
        store.close()
