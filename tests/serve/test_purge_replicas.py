"""Erasure that every process sees: two ``ximgctx serve`` replicas on one SQLite loop store, then ``ximgctx
purge --loop-db`` of an author. Within the bound neither replica returns the author in search or in memory
effects, both acknowledge the purge in the store, a later feedback brings nothing of theirs back, and no
file under the workdir holds their text, their id or an unkeyed digest of it. A purge killed midway is
completed by the next run, with one audit record in the store."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ximgctx import Post, Reply
from ximgctx.governance import govern
from ximgctx.inference import Predictor, SearchIndex
from ximgctx.inference._authors import AuthorKey
from ximgctx.inference.memory import LabelMemory
from ximgctx.queue.erasure import PurgeLog, erased_since
from ximgctx.queue.loop import LoopState

from .._inference_fixtures import make_posts, model_dir
from .._queue_fixtures import KEY, make_store, wait_port
from .._serve_fixtures import stop_processes

pytestmark = pytest.mark.usefixtures("one_thread")

GOVERNANCE_KEY = b"purge-replicas-governance-key-0123456789"
AUTHOR = "erased_author_7731"  # governance keeps identities normalised (lower case)
MARK = "zebracorn"  # in every text of theirs, so a scan of the files can find any left
POST_PREFIX = "gonepost-"
POLL_S = 0.2
BOUND_S = 5.0  # the bound on purge visibility
DEADLINE_S = 60.0  # the deadline of every wait in the test (a wait past BOUND_S fails the bound check)
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XIMGCTX_QUEUE_KEY": KEY.decode(),
        "XIMGCTX_GOVERNANCE_KEY": GOVERNANCE_KEY.decode(),
        "OMP_NUM_THREADS": "1",
    }


def _posts() -> list[Post]:
    """Public posts: every fourth by AUTHOR (marked, with their own post ids), the others by u0..u2; a post
    of another author carries a reply by AUTHOR (erasure drops it from index and memory too)."""
    out = []
    for i, p in enumerate(make_posts(16, seed=41, folder="purge-replicas")):
        theirs = i % 4 == 1
        replies = [Reply(r.text, "u5") for r in p.replies]
        if i == 6:
            replies.append(Reply(f"{MARK} reply of theirs", AUTHOR))
        out.append(
            Post(
                id=f"{POST_PREFIX}{i}" if theirs else p.id,
                image=p.image,
                text=f"{MARK} {p.text}" if theirs else p.text,
                replies=replies,
                labels=p.labels,
                meta={"visibility": "public", "author": AUTHOR if theirs else f"u{i % 3}"},
            )
        )
    return out


def _workdir(tmp_path: Path) -> tuple[Path, Path, list[Post], set[str]]:
    """``work/``: a search index and a label memory (both holding the author's posts, keyed by the
    operator's governance key) and the loop store; ``ops/``: the operator's opt-out list (outside work/)."""
    work, ops = tmp_path / "work", tmp_path / "ops"
    work.mkdir()
    ops.mkdir()
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    governed = govern(_posts(), key=GOVERNANCE_KEY).posts
    assert len(governed) == 16
    theirs = {
        p.id for p in governed if p.meta["author"] == AUTHOR or any(r.author == AUTHOR for r in p.replies)
    }
    assert len(theirs) == 5
    SearchIndex.build(predictor, governed, author_key=GOVERNANCE_KEY).save(work / "index")
    reference = make_posts(32, seed=42, folder="purge-replicas-ref", with_labels=False)
    for i, p in enumerate(reference):
        p.meta = {"visibility": "public", "author": f"ref{i % 4}"}
    reference = govern(reference, key=GOVERNANCE_KEY)
    memory = LabelMemory.for_predictor(predictor, reference=reference.posts)
    memory.author_key = AuthorKey.operator(GOVERNANCE_KEY)
    memory.add(predictor, governed)
    memory.save(work / "memory")
    make_store(str(work / "loop.sqlite")).close()  # the store, its tasks set
    (ops / "opt_out.txt").write_text(f"@{AUTHOR.upper()}\n")
    return work, ops, governed, theirs


def _serve(work: Path, ops: Path, name: str, port: int) -> subprocess.Popen:
    log = open(ops / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "ximgctx.cli", "serve", "--model", str(model_dir()), "--no-auth"]
        + ["--port", str(port), "--loop-db", str(work / "loop.sqlite"), "--state-poll-s", str(POLL_S)]
        + ["--device", "cpu", "--memory", str(work / "memory"), "--index", str(work / "index")]
        + ["--explain", "all", "--replica-id", name],
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_url(post: Post) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(str(post.image)).read_bytes()).decode()


def _feedback(url: str, post: Post, author: str) -> httpx.Response:
    body = {
        "post": {
            "id": post.id,
            "text": post.text,
            "image": _data_url(post),
            "replies": [r.text for r in post.replies],
            "meta": {"visibility": "public", "author": author},
        },
        "labels": {"intent": ["threat"], "meaning": "literal"},
        "note": "reviewed",
    }
    return httpx.post(f"{url}/v1/feedback", json=body, timeout=60)


def _seen(url: str, query: Post, theirs: set[str]) -> set[str]:
    """The author's post ids a replica returns: in search hits (a text query over every post) and as the
    memory entry that moved the scores of a near-copy of ``query`` (explanations)."""
    r = httpx.post(f"{url}/v1/search", json={"text": query.text, "k": 50, "space": "fused"}, timeout=60)
    assert r.status_code == 200, r.text
    seen = {h["id"] for h in r.json()["data"]} & theirs
    body = {
        "input": [
            {"type": "text", "text": query.text + "!"},
            {"type": "image_url", "image_url": {"url": _data_url(query)}},
        ],
        "ximgctx": {"replies": [r.text for r in query.replies]},
    }
    r = httpx.post(f"{url}/v1/moderations", json=body, timeout=60)
    assert r.status_code == 200, r.text
    memory = r.json()["results"][0]["explanation"]["memory"]
    if memory is not None and memory["entry"] in theirs:
        seen.add("memory:" + memory["entry"])
    return seen


def _needles(governed: list[Post], theirs: set[str], extra: list[bytes]) -> dict[str, bytes]:
    """What no file may hold once the author is erased: their id, their texts, their posts' ids, unkeyed
    digests of their id, and whatever the test saw stored of them before (``extra``)."""
    out = {
        "author id": AUTHOR.encode(),
        "author id (as listed)": AUTHOR.upper().encode(),
        "their text": MARK.encode(),
        "their post ids": POST_PREFIX.encode(),
        "sha256(author)": hashlib.sha256(AUTHOR.encode()).hexdigest().encode(),
        "sha256(author) raw": hashlib.sha256(AUTHOR.encode()).digest(),
        "md5(author)": hashlib.md5(AUTHOR.encode()).hexdigest().encode(),  # noqa: S324 - a needle, not a use
    }
    for i, blob in enumerate(extra):
        out[f"stored before #{i}"] = blob
    return out


def _scan(folder: Path, needles: dict[str, bytes]) -> list[str]:
    """Every (file, needle) pair where a file under ``folder`` holds a needle (all bytes of every file)."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            blob = path.read_bytes()
            found += [f"{path.relative_to(folder)}: {name}" for name, n in needles.items() if n in blob]
    return found


def test_two_replicas_drop_a_purged_author_within_the_bound_and_nothing_brings_them_back(
    tmp_path: Path,
) -> None:
    work, ops, governed, theirs = _workdir(tmp_path)
    ports = {"replica-a": _free_port(), "replica-b": _free_port()}
    procs = [_serve(work, ops, name, port) for name, port in ports.items()]
    urls = [f"http://127.0.0.1:{port}" for port in ports.values()]
    try:
        for url, proc, name in zip(urls, procs, ports, strict=True):
            try:
                wait_port(url, timeout=180, proc=proc)
            except RuntimeError:
                pytest.fail((ops / f"{name}.log").read_text()[-3000:])
        by_id = {p.id: p for p in governed}
        first = by_id[f"{POST_PREFIX}1"]
        assert first.image is not None
        # a reviewer's feedback about a post of theirs (a reviewed copy of their first post): a memory entry
        target = Post(f"{POST_PREFIX}fb", first.image, f"{MARK} reviewed copy: {first.text}", [], {}, {})
        other = next(p for p in governed if p.id not in theirs and p.image)
        reviewed = _feedback(urls[0], target, AUTHOR)
        assert reviewed.status_code == 200, reviewed.text
        theirs.add(target.id)
        # before: both replicas return the author (in search, and the feedback entry moved the near-copy)
        want = (theirs - {target.id}) | {"memory:" + target.id}
        for url in urls:
            deadline = time.monotonic() + DEADLINE_S
            while (got := _seen(url, target, theirs)) != want:
                assert time.monotonic() < deadline, f"{url} never served the author's feedback: {got}"
                time.sleep(POLL_S)
        store = make_store(str(work / "loop.sqlite"))
        rows = [r for r in LoopState(store).history()["rows"] if r["post_id"] in theirs]
        assert len(rows) == 1
        stored = [rows[0]["post_digest"].encode()]
        with store.sessions() as s:
            from ximgctx.queue.models import LabelRow

            image = s.get(LabelRow, rows[0]["id"]).image
        assert image and len(image) > 64
        stored.append(image)
        needles = _needles(governed, theirs, stored)
        assert _scan(work, needles), "the scan can fail: before the purge the workdir holds the author"

        # the purge, while both replicas serve
        report = ops / "purge.jsonl"
        launched = time.time()
        purge = subprocess.Popen(
            [sys.executable, "-m", "ximgctx.cli", "purge", "--opt-out", str(ops / "opt_out.txt")]
            + ["--index", str(work / "index"), "--memory", str(work / "memory")]
            + ["--loop-db", str(work / "loop.sqlite"), "--wait-replicas-s", "30", "--report", str(report)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        announced = None
        clean: dict[str, float] = {}
        deadline = time.monotonic() + 180
        while len(clean) < len(urls):
            assert time.monotonic() < deadline, "the replicas kept serving the author"
            if announced is None:
                rows_now = erased_since(store)
                if rows_now:
                    with store.sessions() as s:
                        from ximgctx.queue.models import ErasedAuthor

                        announced = min(s.get(ErasedAuthor, i).created_at for i, _, _ in rows_now)
            for url in urls:
                if url not in clean and announced is not None and not _seen(url, target, theirs):
                    clean[url] = time.time()
            time.sleep(0.05)
        out, err = purge.communicate(timeout=180)
        assert purge.returncode == 0, err.decode()[-3000:]
        assert announced is not None
        visible = max(clean.values()) - announced
        print(
            f"purge visibility: both replicas stopped returning the author {visible:.2f} s after the purge "
            f"announced it ({max(clean.values()) - launched:.2f} s after `ximgctx purge` was launched; poll "
            f"{POLL_S} s)"
        )
        assert visible <= BOUND_S
        lines = [json.loads(x) for x in out.decode().splitlines()]
        assert [x.get("target") for x in lines] == ["queue", "index", "memory", None]
        assert lines[0]["label_rows"] == 1 and lines[1]["removed"] == lines[2]["removed"] == 5
        acks = lines[-1]
        assert acks["acknowledged"] == ["replica-a", "replica-b"] and acks["pending"] == [], acks
        print(f"replica acknowledgements: {acks['acknowledged']} in {acks['seconds']:.2f} s")
        assert report.read_text().splitlines()[-1] == out.decode().splitlines()[-1]
        (record,) = PurgeLog(store).records()  # the audit: one completed record in the store
        assert record["state"] == "completed" and record["generation"] == acks["generation"]
        assert record["counts"]["queue.label_rows"] == 1 and record["attempts"] == 1

        # afterwards: a later feedback (another author's post) re-saves nothing of theirs, and a feedback
        # about their post is refused; both replicas still return nothing of theirs
        later = _feedback(urls[1], other, "u1")
        assert later.status_code == 200, later.text
        refused = _feedback(urls[0], target, AUTHOR)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "erased_author"
        time.sleep(3 * POLL_S)
        for url in urls:
            assert _seen(url, target, theirs) == set()
            gone = httpx.post(f"{url}/v1/search", json={"post_id": f"{POST_PREFIX}1"}, timeout=60)
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        audit = httpx.get(f"{urls[0]}/v1/memory/history", timeout=60).json()["audit"]  # the admin route
        erased = [(a["action"], a["detail"].get("erased"), a["why"]) for a in audit]
        assert erased == [("feedback", True, ""), ("feedback", None, "reviewed")]  # no note of theirs kept
        assert [r["post_id"] for r in LoopState(store).history()["rows"] if r["removed"] is None] == [
            other.id
        ]
        assert len(SearchIndex.load(work / "index")) == len(governed) - 5
        memory = LabelMemory.load(work / "memory")
        assert len(memory) == len(governed) - 5 and not set(memory.ids) & theirs
        store.close()
        stop_processes(procs)
        procs = []
        found = _scan(work, needles)
        assert found == [], found
        assert _scan(ops, {"their text": MARK.encode(), "their post ids": POST_PREFIX.encode()}) == []
    finally:
        stop_processes(procs)


def test_a_purge_killed_midway_is_completed_by_the_next_run_with_one_audit_row(tmp_path: Path) -> None:
    work, ops, governed, theirs = _workdir(tmp_path)
    store = make_store(str(work / "loop.sqlite"))
    target = next(p for p in governed if p.meta["author"] == AUTHOR)
    LoopState(store).add_feedback(target, who="rita")
    argv = ["purge", "--opt-out", str(ops / "opt_out.txt"), "--index", str(work / "index")]
    argv += [
        "--memory",
        str(work / "memory"),
        "--loop-db",
        str(work / "loop.sqlite"),
        "--wait-replicas-s",
        "0",
    ]
    # the process dies (no cleanup, no exception handling) while the memory is being rewritten
    die = (
        "import os, sys; from ximgctx.inference.memory import LabelMemory; "
        "LabelMemory.save = lambda *a, **k: os._exit(9); "
        f"from ximgctx.cli import main; sys.exit(main({argv!r}))"
    )
    killed = subprocess.run([sys.executable, "-c", die], env=_env(), capture_output=True, timeout=300)
    assert killed.returncode == 9, killed.stderr.decode()[-3000:]
    (record,) = PurgeLog(store).records()
    assert record["state"] == "started" and record["completed"] is None  # written first, not completed
    assert {t["target"]: t["state"] for t in record["targets"]} == {
        "queue": "done",
        "index": "done",
        "memory": "running",
    }
    assert len(erased_since(store)) == 1  # the author announced to replicas before anything was erased
    assert len(SearchIndex.load(work / "index")) == len(governed) - 5
    assert len(LabelMemory.load(work / "memory")) == len(governed)  # not yet
    again = subprocess.run(
        [sys.executable, "-m", "ximgctx.cli", *argv], env=_env(), capture_output=True, timeout=300
    )
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert f"resumed and completed purge {record['id']}" in again.stderr.decode()
    lines = [json.loads(x) for x in again.stdout.decode().splitlines()]
    assert lines[-1]["acknowledged"] == [] and lines[-1]["pending"] == []  # no replica runs
    (done,) = PurgeLog(store).records()  # one audit row, completed
    assert done["id"] == record["id"] and done["state"] == "completed" and done["attempts"] == 2
    assert done["counts"] == {"queue.label_rows": 1, "queue.items": 0, "queue.votes": 0, "queue.replies": 0,
                              "index.removed": 5, "memory.removed": 5}  # fmt: skip
    assert len(erased_since(store)) == 1
    memory = LabelMemory.load(work / "memory")
    assert len(memory) == len(governed) - 5 and not set(memory.ids) & theirs
    assert LoopState(store).history()["rows"] == []
    store.close()
    assert _scan(work, _needles(governed, theirs, [])) == []


def test_purge_keeps_its_record_in_one_place(tmp_path: Path) -> None:
    from ximgctx.cli import purge as purge_cli

    (tmp_path / "opt_out.txt").write_text(f"{AUTHOR}\n")
    (tmp_path / "x.jsonl").write_text("")
    argv = ["--opt-out", str(tmp_path / "opt_out.txt"), "--data", str(tmp_path / "x.jsonl")]
    argv += ["--loop-db", str(tmp_path / "loop.sqlite"), "--journal", str(tmp_path / "j.json")]
    assert purge_cli.main(argv) == 2
    assert not (tmp_path / "loop.sqlite").exists() and not (tmp_path / "j.json").exists()
