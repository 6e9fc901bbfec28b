"""Scores a personal-data battery through ``govern``: every item in a post's text, a reply, an image's alt
text and a nested meta string; benign sentences in the same channels must come out unchanged."""

from __future__ import annotations

import re
from collections import Counter

from ximgctx.data.record import Post, Reply
from ximgctx.governance import GovernancePolicy, govern
from ximgctx.governance.pii import DEFAULT_TOKENS

CHANNELS = ("text", "reply", "alt_text", "meta")
_TOKEN = re.compile(r"\[(?:" + "|".join(k.upper() for k in DEFAULT_TOKENS) + r")\]")


def _post(i: int, channel: str, s: str) -> Post:
    meta = {
        "visibility": "public",
        "author": f"a{i}",
        "media": [{"alt_text": "a photo"}],
        "original": {"x": {"note": "ok"}},
    }
    post = Post(id=f"p{i}", text="hello", replies=[Reply("fine", "r1")], meta=meta)
    if channel == "text":
        post.text = s
    elif channel == "reply":
        post.replies = [Reply(s, "r1")]
    elif channel == "alt_text":
        meta["media"][0]["alt_text"] = s
    else:
        meta["original"]["x"]["note"] = s
    return post


def _read(post: Post, channel: str) -> str:
    if channel == "text":
        return post.text
    if channel == "reply":
        return post.replies[0].text
    if channel == "alt_text":
        return post.meta["media"][0]["alt_text"]
    return post.meta["original"]["x"]["note"]


def score(
    items: list[tuple[str, str, str]], benign: list[str], policy: GovernancePolicy | None = None
) -> dict:
    """``items``: (kind, value, template with {}) -> recall/precision overall, per kind, per channel."""
    posts, truth = [], []
    for i, (kind, value, template) in enumerate(items):
        channel = CHANNELS[i % len(CHANNELS)]
        posts.append(_post(i, channel, template.format(value)))
        truth.append((kind, value, template, channel))
    n = len(posts)
    for j, s in enumerate(benign):
        posts.append(_post(n + j, CHANNELS[j % len(CHANNELS)], s))
    out = {p.id: p for p in govern(posts, policy or GovernancePolicy()).posts}
    hit: Counter = Counter()
    total: Counter = Counter()
    false_spans = 0
    misses = []
    for i, (kind, value, template, channel) in enumerate(truth):
        got = _read(out[f"p{i}"], channel)
        ok = got == template.format(DEFAULT_TOKENS[kind])
        for key in ("all", f"kind:{kind}", f"channel:{channel}"):
            total[key] += 1
            hit[key] += ok
        if not ok:
            misses.append((kind, value, got))
            # spans found beyond the one expected count against precision
            false_spans += max(0, len(_TOKEN.findall(got)) - (value not in got))
    changed = []
    for j, s in enumerate(benign):
        got = _read(out[f"p{n + j}"], CHANNELS[j % len(CHANNELS)])
        if got != s:
            changed.append((s, got))
            false_spans += max(1, len(_TOKEN.findall(got)))
    tp = hit["all"]
    return {
        "recall": tp / total["all"],
        "precision": tp / (tp + false_spans) if tp + false_spans else 1.0,
        "per": {k: (hit[k], total[k]) for k in sorted(total)},
        "misses": misses,
        "benign_changed": changed,
    }
