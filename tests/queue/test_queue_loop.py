"""The loop closed through the queue: ContextBench posts queued in rounds, simulated labelers (70% accurate,
20% spammers) lease and vote, ``export`` aggregates (Dawid–Skene); the exported labels beat majority vote
and the model retrained on them beats the model before. Also: a vote changes the next moderation of a
near-duplicate post at once, and a server killed with SIGKILL mid-vote loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import numpy as np
import pytest

from ximgctx import load_posts
from ximgctx.contextbench import generate
from ximgctx.hitl import aggregate_votes, load_tasks, soft_to_hard
from ximgctx.queue import QueueConfig, QueueStore
from ximgctx.queue.report import export_manifest

from .._queue_fixtures import KEY, wait_port

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]


class Crowd:
    """Simulated labelers: honest ones right with ``accuracy`` per task (else another answer, uniformly),
    spammers answering uniformly at random."""

    def __init__(self, n: int, spammers: float, accuracy: float, tasks, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.names = [f"sim{i:02d}" for i in range(n)]
        self.spam = set(self.rng.choice(self.names, size=round(spammers * n), replace=False))
        self.accuracy, self.tasks = accuracy, tasks

    def answer(self, name: str, truth: dict) -> dict:
        out = {}
        for t in self.tasks:
            if t.name not in truth:
                continue
            true = truth[t.name]
            if t.kind == "multiclass":
                if name in self.spam or self.rng.random() >= self.accuracy:
                    choices = list(t.labels) if name in self.spam else [x for x in t.labels if x != true]
                    true = choices[int(self.rng.integers(len(choices)))]
                out[t.name] = true
            else:
                if name in self.spam:
                    out[t.name] = [x for x in t.labels if self.rng.random() < 0.5]
                elif self.rng.random() < self.accuracy:
                    out[t.name] = list(true)
                else:
                    other = list(true)
                    while set(other) == set(true):
                        other = [x for x in t.labels if self.rng.random() < 0.5]
                    out[t.name] = other
        return out


def _accuracy(labels: dict, truth: dict, task: str) -> float:
    hits = [labels[p] == truth[p][task] for p in truth if p in labels]
    return sum(hits) / len(hits)


def test_contextbench_loop_through_the_queue(tmp_path):
    root = tmp_path / "bench"
    generate(root, seed=5, n_train=240, n_val=24, n_test=200, n_compositional=8, image_size=32)
    pool, test = load_posts(root / "train.jsonl"), load_posts(root / "test.jsonl")
    tasks = [t for t in load_tasks("contextbench") if t.name in ("meaning", "intent")]
    truth = {p.id: dict(p.labels) for p in pool}
    store = QueueStore(
        QueueConfig(db=str(tmp_path / "q.sqlite"), key=KEY, overlap=5, gold_rate=0.0), tasks=tasks
    )
    crowd = Crowd(10, spammers=0.2, accuracy=0.7, tasks=tasks, seed=1)
    who = {n: store.labeler_for_token(store.add_labeler(n)) for n in crowd.names}
    rng = np.random.default_rng(0)
    first_round = tmp_path / "labels-round1.jsonl"
    for rnd in range(3):  # three rounds of 80 posts
        chunk = pool[rnd * 80 : (rnd + 1) * 80]
        assert store.enqueue(chunk, source="select").added == 80
        for _ in range(80 * 5 + 1):  # every pass but the last casts at least one of the 80 x 5 votes
            progress = False
            for name in rng.permutation(crowd.names):
                lease = store.lease(who[name])
                if lease is not None:
                    store.vote(who[name], lease.item_id, crowd.answer(name, truth[lease.post_id]), "sim")
                    progress = True
            if not progress:
                break
        else:
            pytest.fail(f"round {rnd}: the labelers still got leases after 401 passes over 400 answers")
        if rnd == 0:  # what the model could learn from before the next two rounds
            assert export_manifest(store, first_round)["posts"] == 80
    assert store.count()["votes"] == 240 * 5 * 2
    out = tmp_path / "labels.jsonl"
    report = export_manifest(store, out)
    exported = {p.id: p for p in load_posts(out)}
    assert report["posts"] == 240 == len(exported)
    majority = aggregate_votes(store.votes(), method="majority", tasks=tasks)
    figures = {}
    for t in tasks:
        ds = {pid: soft_to_hard(p.labels[t.name], t.kind) for pid, p in exported.items()}
        # a tie leaves majority vote without a label (the tie rule): that post counts as a miss
        mv = {p.id: p.labels.get(t.name) for p in majority.posts}
        norm = (lambda v: None if v is None else sorted(v)) if t.kind == "multilabel" else (lambda v: v)
        truth_t = {pid: {t.name: norm(lab[t.name])} for pid, lab in truth.items()}
        figures[t.name] = (
            _accuracy({k: norm(v) for k, v in ds.items()}, truth_t, t.name),
            _accuracy({k: norm(v) for k, v in mv.items()}, truth_t, t.name),
        )
    print("label accuracy (dawid-skene export, majority vote):", figures)
    for task, (ds_acc, mv_acc) in figures.items():
        assert ds_acc > mv_acc, (task, ds_acc, mv_acc)
    before, after = _retrain(tmp_path, root, first_round, out, test, tasks)
    print("model on the test split (trained on round 1's labels, retrained on all three):", before, after)
    assert after > before


def _score(model_dir: Path, test, tasks) -> float:
    """Mean over tasks of test accuracy (exact set match for multilabel tasks)."""
    from ximgctx import Predictor

    preds = Predictor.from_pretrained(model_dir).predict(test)
    accs = []
    for t in tasks:
        hits = [
            (sorted(p.tasks[t.name].labels) == sorted(post.labels[t.name]))
            if t.kind == "multilabel"
            else p.tasks[t.name].labels[0] == post.labels[t.name]
            for p, post in zip(preds, test, strict=True)
        ]
        accs.append(sum(hits) / len(hits))
    return round(float(np.mean(accs)), 4)


def _retrain(
    tmp_path: Path, root: Path, before_labels: Path, manifest: Path, test, tasks
) -> tuple[float, float]:
    """The model before (trained on the first round's exported labels) and after (the same training on the
    export of all three rounds): 150 steps each, the same seed."""
    from ximgctx import write_posts
    from ximgctx.governance import govern
    from ximgctx.training import train

    write_posts(govern(load_posts(root / "val.jsonl")).posts, tmp_path / "val.jsonl")
    experiment = {
        "model": {
            "tasks": [{"name": t.name, "labels": list(t.labels), "kind": t.kind} for t in tasks],
            "encoder": {"arch": "ximgctx-tiny"},
            "fusion": {"kind": "concat", "hidden_dim": 64, "dropout": 0.0},
            "lora": None,
        },
        "data": {"train": str(before_labels), "val": str(tmp_path / "val.jsonl")},
        "train": {
            "batch_size": 16,
            "eval_every": 1000,
            "save_every": 1000,
            "progress_bar": False,
            "tensorboard": False,
            "seed": 0,
            "optim": {"lr": {"fusion": 3e-3, "heads": 3e-3}, "warmup_steps": 5},
        },
    }
    steps = "train.max_steps=150"
    before = train(experiment, overrides=[f"train.output_dir={tmp_path / 'before'}", steps])
    after = train(
        experiment, overrides=[f"train.output_dir={tmp_path / 'after'}", steps, f"data.train={manifest}"]
    )
    return _score(before.model_dir, test, tasks), _score(after.model_dir, test, tasks)


# ------------------------------------------------------------------------------------------- crash
def _serve(db: Path, key_file: Path, port: int, log) -> subprocess.Popen:
    from .._inference_fixtures import model_dir

    cmd = [
        sys.executable,
        "-m",
        "ximgctx.cli",
        "queue",
        "serve",
        "--model",
        str(model_dir()),
        "--db",
        str(db),
    ]
    cmd += ["--queue-key-file", str(key_file), "--no-auth", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_sigkill_mid_vote_loses_no_committed_vote_and_duplicates_none(tmp_path):
    from .._queue_fixtures import _free_port, answer, make_store, public_posts

    db, key_file = tmp_path / "q.sqlite", tmp_path / "queue.key"
    key_file.write_bytes(KEY)
    store = make_store(str(db), overlap=2, gold_rate=0.0)
    store.enqueue(public_posts(200, "k"))
    tokens = [store.add_labeler(f"k{i}") for i in range(8)]
    store.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = _serve(db, key_file, port, log)
    wait_port(url, proc=proc)
    committed, in_flight, lock = [], [], threading.Lock()
    enough = threading.Event()  # 60 votes committed, or a labeler stopped

    def labeler(token: str) -> list[tuple[str, int, str]]:
        """Lease and vote until the server dies; returns the votes the live server answered with other than
        200 (asserted on in the test's thread, where a failure is seen)."""
        refused = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            try:
                while True:
                    try:
                        item = c.post("/v1/queue/lease").json()["item"]
                    except httpx.HTTPError:
                        return refused
                    body = {"labels": answer(item["item_id"]), "note": "k"}
                    try:
                        r = c.post(f"/v1/queue/items/{item['item_id']}/vote", json=body)
                    except httpx.HTTPError:  # the server died while this vote was in flight
                        with lock:
                            in_flight.append((token, item["item_id"], body))
                        return refused
                    if r.status_code != 200:
                        refused.append((item["item_id"], r.status_code, r.text))
                        return refused
                    with lock:
                        committed.append((token, item["item_id"], body))
                        if len(committed) >= 60:
                            enough.set()
            finally:  # a labeler that stops before the kill (refused, or raised) wakes the test at once
                enough.set()

    pool = ThreadPoolExecutor(max_workers=len(tokens))
    labelers = [pool.submit(labeler, t) for t in tokens]
    try:
        reached = enough.wait(timeout=120)
        with lock:
            seen = len(committed)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        _, running = wait(labelers, timeout=60)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert not running, f"{len(running)} labelers still running 60 s after the server was killed"
    refusals = [r for f in labelers for r in f.result()]  # re-raises what a labeler raised
    assert refusals == [], f"the live server refused votes: {refusals}"
    assert reached and seen >= 60, f"only {seen} votes committed within 120 s before the kill"

    store = make_store(str(db), overlap=2, gold_rate=0.0)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    answers = Counter((r["post_id"], r["labeler"]) for r in store.vote_rows())
    assert set(answers.values()) <= {3}  # an answer is all of its tasks or nothing: no half-written vote
    n_committed = len(committed)
    assert n_committed <= len(answers) <= n_committed + len(in_flight)  # nothing committed was lost
    # the labelers retry what was in flight against a restarted server: stored once, never twice
    proc = _serve(db, key_file, port, log)
    wait_port(url, proc=proc)
    try:
        for token, item_id, body in in_flight:
            r = httpx.post(
                f"{url}/v1/queue/items/{item_id}/vote",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    rows = store.vote_rows()
    stored = Counter((r["post_id"], r["labeler"], r["task"]) for r in rows)
    assert max(stored.values()) == 1
    assert len(rows) == 3 * (n_committed + len(in_flight))
    print(
        f"killed with {n_committed} votes committed and {len(in_flight)} in flight; {len(rows)} rows after "
        "retries"
    )
    store.close()
