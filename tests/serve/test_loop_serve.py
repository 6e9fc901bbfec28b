"""The served loop: a reviewer's feedback changes the next answer and is undone exactly, labelers' votes count
by the store's rule, and replicas on one store answer alike within the poll bound."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest

from ximgctx import Post
from ximgctx.cli.hitl import main as hitl_main
from ximgctx.queue.loop import LoopState
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import make_posts, model_dir
from .._queue_fixtures import KEY, make_store
from .._serve_fixtures import running, stop_processes

pytestmark = pytest.mark.usefixtures("one_thread")

MODERATOR = "moderator-key-0123456789"
REVIEWER = "reviewer-key-0123456789a"
ADMIN = "admin-key-0123456789abcd"
KEYS = [MODERATOR, f"{REVIEWER} review name=rita", f"{ADMIN} admin name=ops"]
POLL_S = 0.2
BOUND_S = 10.0  # the deadline of every wait for a replica (its poll interval is POLL_S)


GOVERNANCE_KEY = "loop-serve-governance-key-0123456789"  # the operator's: keys the memory's author digests


@pytest.fixture(autouse=True)
def _governance_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIMGCTX_GOVERNANCE_KEY", GOVERNANCE_KEY)  # servers (and their processes) read it


@pytest.fixture(scope="module")
def reference_memory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty label memory centred on governed reference posts (never on requests): what the servers serve
    and the store's effective labels are added to."""
    from ximgctx.inference import Predictor
    from ximgctx.inference.memory import LabelMemory

    folder = tmp_path_factory.mktemp("loop-serve") / "memory"
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    reference = make_posts(48, seed=21, folder="loop-serve-reference", with_labels=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XIMGCTX_GOVERNANCE_KEY", GOVERNANCE_KEY)
        LabelMemory.for_predictor(predictor, reference=reference).save(folder)
    return folder


def _posts() -> tuple[Post, list[Post]]:
    warm = make_posts(40, seed=7, folder="loop-serve", with_labels=False)
    target = next(p for p in warm if p.image and p.replies)
    return target, warm


def _data_url(post: Post) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(str(post.image)).read_bytes()).decode()


def _moderate(url: str, post: Post, suffix: str = "!") -> dict[str, float]:
    """The served scores of a near-duplicate of ``post`` (one more character of text)."""
    body = {
        "input": [
            {"type": "text", "text": post.text + suffix},
            {"type": "image_url", "image_url": {"url": _data_url(post)}},
        ],
        "ximgctx": {"replies": [r.text for r in post.replies]},
    }
    r = httpx.post(
        f"{url}/v1/moderations", json=body, headers={"Authorization": f"Bearer {MODERATOR}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["ximgctx"]["category_scores"]


def _feedback(url: str, post: Post, key: str = REVIEWER, labels: dict | None = None) -> httpx.Response:
    body = {
        "post": {
            "id": post.id,
            "text": post.text,
            "image": _data_url(post),
            "replies": [r.text for r in post.replies],
            "meta": {"visibility": "public", "author": "u1"},
        },
        "labels": labels or {"intent": ["threat"], "meaning": "literal"},
        "note": "a threat in the replies",
    }
    return httpx.post(f"{url}/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _warm(url: str, posts: list[Post]) -> None:
    """Requests before the first feedback (a new memory's reference posts)."""
    r = httpx.post(
        f"{url}/v1/moderations",
        json={"input": [p.text for p in posts[:32]]},
        headers={"Authorization": f"Bearer {MODERATOR}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text


def _until(fn, want, bound: float = BOUND_S):  # noqa: ANN001, ANN202
    """Poll ``fn()`` until it equals ``want`` or the deadline passes; returns (value, seconds)."""
    start = time.monotonic()
    while True:
        got = fn()
        if got == want or time.monotonic() - start > bound:
            return got, time.monotonic() - start
        time.sleep(0.05)


def test_feedback_needs_review_changes_the_next_answer_and_revert_restores_it_exactly(
    tmp_path, monkeypatch, reference_memory
):
    store = make_store(str(tmp_path / "loop.sqlite"))
    target, warm = _posts()
    app = create_app(
        model_dir(),
        config=ServeConfig(api_keys=KEYS, state_poll_s=POLL_S),
        state=store,
        memory=reference_memory,
    )
    with running(app) as url:
        _warm(url, warm)
        before = _moderate(url, target)
        denied = _feedback(url, target, key=MODERATOR)
        assert denied.status_code == 403 and denied.json()["error"]["param"] == "review"
        assert _moderate(url, target) == before  # the refused call changed nothing
        resp = _feedback(url, target)
        assert resp.status_code == 200, resp.text
        row_id = resp.json()["id"]
        after = _moderate(url, target)
        assert after["threat"] > before["threat"] + 0.05  # the reviewer's label took effect at once
        history = LoopState(store).history(target.id)
        assert [(r["who"], r["role"]) for r in history["rows"]] == [("rita", "reviewer")]  # the audit: who
        assert [(a["who"], a["action"], a["why"]) for a in history["audit"]] == [
            ("rita", "feedback", "a threat in the replies")
        ]
        served = httpx.get(f"{url}/v1/memory/history", params={"post": target.id},
                           headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
        assert served.status_code == 200 and served.json()["rows"] == history["rows"]
        assert served.json()["audit"] == history["audit"]
        denied = httpx.get(f"{url}/v1/memory/history", headers={"Authorization": f"Bearer {REVIEWER}"})
        assert denied.status_code == 403 and denied.json()["error"]["param"] == "admin"
        # undo from the command line (another process's view of the store): the server follows its generation
        monkeypatch.setenv("XIMGCTX_QUEUE_KEY", KEY.decode())
        db = str(tmp_path / "loop.sqlite")
        assert (
            hitl_main(["revert", target.id, "--why", "wrong post", "--by", "lead", "--db", db], "memory") == 0
        )
        restored, _ = _until(lambda: _moderate(url, target), before)
        assert restored == before  # exactly the answer before the feedback
        assert LoopState(store).history(target.id)["audit"][-1] | {"time": 0, "id": 0} == {
            "id": 0,
            "time": 0,
            "who": "lead",
            "role": "admin",
            "action": "revert",
            "target": str(row_id),
            "detail": {
                "post_digest": history["rows"][0]["post_digest"],
                "by": "rita",
                "role": "reviewer",
                "labels": {"intent": ["threat"], "meaning": "literal"},
            },
            "why": "wrong post",
        }
        # feedback again, then DELETE by an admin: restored again; a reviewer may not delete
        again = _feedback(url, target).json()["id"]
        assert _moderate(url, target) == after
        headers = {"Authorization": f"Bearer {ADMIN}"}
        gone = httpx.delete(f"{url}/v1/feedback/{again}", params={"why": "dup"}, headers=headers)
        assert gone.status_code == 200 and gone.json()["removed"] is True
        assert _moderate(url, target) == before
        assert httpx.delete(f"{url}/v1/feedback/{again}", headers=headers).status_code == 404
    store.close()


def test_votes_count_by_the_rule_and_revoking_undoes_them(tmp_path, reference_memory):
    store = make_store(str(tmp_path / "q.sqlite"), overlap=3, gold_rate=0.0)
    target, warm = _posts()
    store.enqueue([Post(target.id, target.image, target.text, target.replies, {}, {"visibility": "public"})])
    tokens = {name: store.add_labeler(name) for name in ("ann", "bob")}
    app = create_app(
        model_dir(),
        config=ServeConfig(api_keys=KEYS, state_poll_s=POLL_S),
        queue=store,
        memory=reference_memory,
    )

    def vote(url: str, token: str) -> dict:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            item = c.post("/v1/queue/lease").json()["item"]
            labels = {"intent": ["threat"], "meaning": "literal"}
            r = c.post(f"/v1/queue/items/{item['item_id']}/vote", json={"labels": labels})
            assert r.status_code == 200, r.text
            return r.json()

    with running(app) as url:
        _warm(url, warm)
        before = _moderate(url, target)
        assert vote(url, tokens["ann"])["effective_changed"] is False
        assert _moderate(url, target) == before  # one labeler's vote: the served answer is the same
        assert vote(url, tokens["bob"])["effective_changed"] is True
        agreed = _moderate(url, target)
        assert agreed["threat"] > before["threat"] + 0.05  # two agreeing labelers (k = 2): it counts
        assert store.revoke_labeler("bob", by="ops", why="spam")
        undone, _ = _until(lambda: _moderate(url, target), before)
        assert undone == before  # revoking bob undid his effect (ann alone does not count)
    store.close()


def test_two_replicas_on_one_store_answer_alike_after_a_review(tmp_path, reference_memory):
    db = str(tmp_path / "shared.sqlite")
    a_store, b_store = make_store(db), make_store(db)
    target, warm = _posts()
    config = ServeConfig(api_keys=KEYS, state_poll_s=POLL_S)
    a, b = (
        create_app(model_dir(), config=config, state=a_store, memory=reference_memory),
        create_app(model_dir(), config=config, state=b_store, memory=reference_memory),
    )
    with running(a) as url_a, running(b) as url_b:
        _warm(url_a, warm)
        _warm(
            url_b, warm[::-1]
        )  # another request stream: the memory's centre is the store's, not B's traffic
        before = _moderate(url_b, target)
        assert _moderate(url_a, target) == before
        assert _feedback(url_a, target).status_code == 200
        answer_a = _moderate(url_a, target)
        assert answer_a != before
        answer_b, seconds = _until(lambda: _moderate(url_b, target), answer_a)
        assert answer_b == answer_a and seconds <= BOUND_S  # replica B agrees within the bound
        print(f"replica agreement: {seconds:.2f} s (poll {POLL_S} s)")
    a_store.close()
    b_store.close()


def test_logout_revokes_the_session_for_every_request(tmp_path, reference_memory):
    store = make_store(str(tmp_path / "q.sqlite"))
    token = store.add_labeler("ann")
    app = create_app(model_dir(), config=ServeConfig(api_keys=KEYS), queue=store, memory=reference_memory)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/queue/login", data={"token": token}).status_code in (200, 303)
        cookie = c.cookies.get("ximgctx_queue")
        assert cookie and c.post("/v1/queue/lease").status_code == 200
        c.post("/queue/logout")
        replay = httpx.post(f"{url}/v1/queue/lease", cookies={"ximgctx_queue": cookie}, timeout=60)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_token"
    store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_serve_processes_on_one_store_answer_alike(tmp_path, reference_memory):
    """Two ``ximgctx serve --loop-db`` processes on 127.0.0.1 (no auth: loopback; the caller may review)."""
    import os
    import subprocess
    import sys

    db = str(tmp_path / "shared.sqlite")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "XIMGCTX_QUEUE_KEY": KEY.decode(),
        "OMP_NUM_THREADS": "1",
    }
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ximgctx.cli", "serve", "--model", str(model_dir()), "--no-auth"]
            + ["--port", str(port), "--loop-db", db, "--state-poll-s", str(POLL_S), "--device", "cpu"]
            + ["--memory", str(reference_memory)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            deadline = time.monotonic() + 240  # two processes loading at once on a shared 2-core runner
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not become ready"
                time.sleep(0.2)
        target, warm = _posts()
        for url in urls:
            _warm(url, warm)
        before = _moderate(urls[1], target)
        reviewed = _feedback(urls[0], target)
        assert reviewed.status_code == 200 and reviewed.json()["reviewer"] == "local", reviewed.text
        answer_a = _moderate(urls[0], target)
        assert answer_a != before
        answer_b, seconds = _until(lambda: _moderate(urls[1], target), answer_a)
        assert answer_b == answer_a and seconds <= BOUND_S
        print(f"two processes: replica B agreed after {seconds:.2f} s (poll {POLL_S} s)")
    finally:
        stop_processes(procs)
