"""Shared pieces of the queue tests: a store on a database URL, a served app with the queue, labelers
driven over HTTP from threads, and a PostgreSQL server started for the session when the machine has one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ximgctx import Post, Reply
from ximgctx.queue import QueueConfig, QueueStore

from ._inference_fixtures import TASKS

KEY = b"queue-test-key-0123456789"


def make_store(db: str, **config) -> QueueStore:
    return QueueStore(QueueConfig(db=db, key=KEY, **config), tasks=TASKS)


def public_posts(n: int, prefix: str = "p") -> list[Post]:
    return [
        Post(
            f"{prefix}{i}",
            None,
            f"post {i} about the saturday march",
            [Reply(f"reply {i}", f"replier{i % 3}")],
            {},
            {"visibility": "public", "author": f"author{i % 5}"},
        )
        for i in range(n)
    ]


def answer(i: int) -> dict:
    """A deterministic answer for item ``i`` (every task of TASKS)."""
    return {
        "meaning": ["literal", "ironic", "symbolic"][i % 3],
        "intent": [["joke"], ["protest"], []][i % 3],
        "objects": [["circle"], [], ["square", "star"]][i % 3],
    }


def label_concurrently(url: str, tokens: list[str], *, per_labeler: int, workers: int = 20) -> list[dict]:
    """Every labeler leases and votes ``per_labeler`` times at once (threads, one client each); returns
    every accepted vote as ``{labeler, item_id, post_id, labels}``."""
    accepted: list[dict] = []
    lock = threading.Lock()

    def run(token: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            for _ in range(per_labeler):
                r = c.post("/v1/queue/lease")
                r.raise_for_status()
                item = r.json()["item"]
                if item is None:
                    return
                labels = answer(item["item_id"])
                v = c.post(f"/v1/queue/items/{item['item_id']}/vote", json={"labels": labels, "note": "n"})
                v.raise_for_status()
                assert v.json()["duplicate"] is False
                with lock:
                    accepted.append({"labeler": token, "item_id": item["item_id"], "labels": labels})

    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(run, t) for t in tokens]:
            f.result()
    return accepted


# ------------------------------------------------------------------------------------------ postgres
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").exists():
            return root
    return None


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1 (a temp data folder), run as the ``postgres`` user when
    the tests run as root. ``Postgres.start()`` returns None with the reason in ``Postgres.why``."""

    why = ""

    def __init__(self, bindir: Path, data: Path, port: int, user: str | None) -> None:
        self.bindir, self.data, self.port, self.user = bindir, data, port, user

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    @classmethod
    def start(cls) -> Postgres | None:
        bindir = _pg_bin()
        if bindir is None:
            cls.why = "PostgreSQL is not installed (apt-get install postgresql; .ci/services.sh does it)"
            return None
        user = "postgres" if os.geteuid() == 0 else None
        data = Path(tempfile.mkdtemp(prefix="ximgctx-pg-"))
        if user:
            shutil.chown(data, user)
        pg = cls(bindir, data / "db", _free_port(), user)
        steps = [
            [str(bindir / "initdb"), "-D", str(pg.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(pg.data),
                "-o",
                f"-p {pg.port} -h 127.0.0.1 -k {data} -c fsync=off",
                "-l",
                str(data / "log"),
                "-w",
                "start",
            ],
        ]
        for step in steps:
            r = pg._run(*step)
            if r.returncode != 0:
                cls.why = f"PostgreSQL did not start: {(r.stderr or r.stdout).strip()[-300:]}"
                shutil.rmtree(data, ignore_errors=True)
                return None
        pg.root = data
        return pg

    def create_db(self, name: str) -> str:
        r = self._run(
            str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name
        )
        assert r.returncode == 0, r.stderr
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def wait_port(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")
