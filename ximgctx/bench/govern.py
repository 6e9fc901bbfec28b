"""Governance speed: unique social posts governed per second per core, and the start-up of a fresh process.

Posts are generated (seeded), every text and reply unique, about ``--pii`` of them (default 30%) holding
personal data (emails, phone numbers of several countries, handles, URLs, cards, IBANs, addresses) and the
rest ordinary posts with the numbers social text is full of (times, prices, scores, versions, years). The
rate is posts over the CPU seconds of this process (one core; ``ximgctx govern`` runs shard folders in
parallel processes, one per core). Start-up is the wall time of a fresh interpreter that imports governance
and governs one post (Presidio's analyzer built, its recognizers compiled). The optimised path (prefilter,
shared analyzer) is also checked against the unoptimised one (every string through the analyzer) on
``--check`` of the posts: the outputs must be equal. The ``processes`` figure governs the same posts as a
shard folder (8 shards) with one process and with ``min(4, cores)`` (``govern_shards``): wall times, their
ratio (process start-up included, so it grows with the data), and whether the two folders are byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

_WORDS = (  # noqa: SIM905 - a sentence is easier to read than a list of 100 words
    "love this view today so much fun with friends at the beach finally weekend coffee morning run city "
    "lights new album drops tonight can't wait game was wild what a goal best pizza in town rainy day mood "
    "reading a great book sunset over the hills happy birthday little one throwback to summer road trip "
    "cooking dinner garden is blooming cats being cats working late again concert vibes new haircut who "
    "else is watching the match train delayed again tiny puppy snow finally museum trip street art market"
).split()
_NUMBERS = (
    "at {h}pm", "{n} likes already", "only ${p}.99", "score {a}-{b}", "since {y}", "{n}% battery", "day {n}",
    "v{a}.{b}.{n}", "{n}km run", "top {n}", "#{w}{n}", "{h}:{m:02d}", "{n} days to go", "room {n}",
)  # fmt: skip
_PII = (
    "mail me at {w}.{w2}{n}@example.com", "call {area}-555-{m:04d}", "text me +44 7700 900{m:03d}",
    "ping @{w}_{w2}{n}", "see https://{w}{n}.example.org/p/{m}", "my card 4111 1111 1111 1111",
    "iban DE89 3704 0044 0532 0130 00", "DM me on {w}{n}.bsky.social", "I live at {n} {W} Street",
    "whatsapp +49 30 1234{m:04d}", "u/{w}{w2}{n} knows", "server at 203.0.113.{n}",
)  # fmt: skip


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        h=rng.randint(1, 12), m=rng.randint(0, 999), n=rng.randint(1, 999), p=rng.randint(1, 99),
        a=rng.randint(0, 9), b=rng.randint(0, 9), y=rng.randint(1990, 2026), w=rng.choice(_WORDS),
        w2=rng.choice(_WORDS), W=rng.choice(_WORDS).capitalize(), area=rng.choice(("415", "212", "646")),
    )  # fmt: skip


def _sentence(rng: random.Random, pii: bool) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 18))]
    if rng.random() < 0.5:
        words.insert(rng.randrange(len(words) + 1), _fill(rng, rng.choice(_NUMBERS)))
    if pii:
        words.insert(rng.randrange(len(words) + 1), _fill(rng, rng.choice(_PII)))
    return " ".join(words) + rng.choice(("", "!", " :)", "?", " 🔥", "."))


def make_posts(n: int, *, pii: float = 0.3, seed: int = 0) -> list[Any]:
    """``n`` unique public posts with 0-3 replies each; about ``pii`` of the posts hold personal data."""
    from ximgctx.data.record import Post, Reply

    rng = random.Random(seed)
    posts = []
    for i in range(n):
        has = rng.random() < pii
        where = rng.randrange(4) if has else -1  # the text, or one of up to three replies
        replies = [
            Reply(text=_sentence(rng, where == j + 1), author=f"u{rng.randrange(10**6)}")
            for j in range(rng.randint(0, 3))
        ]
        meta = {
            "visibility": "public",
            "author": f"u{rng.randrange(10**6)}",
            "lang": "en",
            "likes": rng.randrange(500),
        }
        posts.append(
            Post(id=f"p{i}", text=_sentence(rng, where in (0, len(replies) + 1)), replies=replies, meta=meta)
        )
    return posts


_STARTUP = (
    "import time; t = time.perf_counter()\n"
    "from ximgctx.data.record import Post\n"
    "from ximgctx.governance import GovernancePolicy, govern\n"
    "r = govern([Post(id='1', text='call 415-555-0132', meta={'visibility': 'public', 'author': 'a'})],"
    " GovernancePolicy(), key=b'k' * 32)\n"
    "assert r.posts[0].text == 'call [PHONE]', r.posts[0].text\n"
    "print(time.perf_counter() - t)\n"
)


def startup_seconds(repeats: int = 3) -> dict[str, float]:
    """Wall time of a fresh interpreter governing one post: from start to its answer (best and median)."""
    walls, inner = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _STARTUP], capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"governance start-up failed:\n{proc.stderr[-3000:]}")
        inner.append(float(proc.stdout.strip().splitlines()[-1]))
    walls.sort()
    inner.sort()
    return {"wall_best": round(walls[0], 3), "wall_median": round(walls[len(walls) // 2], 3),
            "import_and_first_post_best": round(inner[0], 3)}  # fmt: skip


def _dump(posts: list[Any]) -> str:
    return json.dumps([p.to_dict() for p in posts], sort_keys=True, default=str)


def _folder_digest(folder: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def processes_figure(posts: list[Any], policy: Any, key: bytes) -> dict[str, Any]:
    """Wall time of governing ``posts`` as an 8-shard folder with one process and with several."""
    from ximgctx.data.shard_write import write_shards
    from ximgctx.governance.shards import govern_shards

    many = max(2, min(4, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="ximgctx-bench-govern-") as tmp:
        write_shards(posts, os.path.join(tmp, "in"), posts_per_shard=max(1, -(-len(posts) // 8)))
        walls, digests = {}, {}
        for n in (1, many):
            out = os.path.join(tmp, f"out{n}")
            t = time.perf_counter()
            govern_shards(os.path.join(tmp, "in"), out, policy, key=key, processes=n)
            walls[n] = time.perf_counter() - t
            digests[n] = _folder_digest(out)
    return {
        "posts": len(posts),
        "shards": 8,
        "processes": many,
        "cores": os.cpu_count(),
        "wall_seconds_1": round(walls[1], 3),
        f"wall_seconds_{many}": round(walls[many], 3),
        "speedup": round(walls[1] / walls[many], 2),
        "same_output_bytes": digests[1] == digests[many],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ximgctx.governance import GovernancePolicy, govern, pii

    policy = GovernancePolicy()
    key = b"b" * 32
    posts = make_posts(args.n, pii=args.pii, seed=args.seed)
    govern(make_posts(50, pii=args.pii, seed=args.seed + 1), policy, key=key)  # analyzer built, untimed
    cpu, wall = time.process_time(), time.perf_counter()
    result = govern(posts, policy, key=key)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    fast = govern(make_posts(args.check, pii=args.pii, seed=args.seed + 2), policy, key=key).posts
    with pii.unoptimised():
        slow = govern(make_posts(args.check, pii=args.pii, seed=args.seed + 2), policy, key=key).posts
    return {
        "n_posts": args.n,
        "replies": sum(len(p.replies) for p in posts),
        "share_with_pii_requested": args.pii,
        "posts_with_redactions": result.audit.posts_with_redactions,
        "redactions": result.audit.redactions,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "posts_per_second_per_core": round(args.n / cpu, 1) if cpu > 0 else None,
        "startup": startup_seconds(args.repeats) if args.repeats > 0 else None,
        "same_outputs_as_unoptimised": {"posts": args.check, "equal": _dump(fast) == _dump(slow)},
        "shard_folder": processes_figure(posts, policy, key),
        "target": ">= 1,000 unique posts/s per core after start-up; start-up <= 3 s",
    }
