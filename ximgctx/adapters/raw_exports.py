"""Raw platform exports to posts: the record as the platform wrote it becomes the post's ``meta``.

Nothing here decides what may be trained on: each record keeps every field it had (visibility, DM and
opt-out fields, authors, mentions), so :func:`ximgctx.governance.govern` reads it by the shape table of
:mod:`ximgctx.governance.shapes` (a raw public X v2 tweet or Bluesky post has no visibility field and needs
none). The adapter only unwraps envelopes (X v2 ``{"data", "includes"}``, X archive ``window.YTD...`` and
``{"tweet": ...}``, ActivityPub ``Create``, Bluesky feed and thread views, Reddit ``{"kind", "data"}``
listings, DiscordChatExporter's ``{"guild", "channel", "messages"}``, X archive DM conversations), finds the
text and id, and reads replies with their authors. Every reply author object is also kept in
``meta["reply_authors"]`` so that an opt-out naming a person by any of their ids finds their replies.

    from ximgctx.adapters.raw_exports import iter_raw_export
    posts = list(iter_raw_export("tweets.jsonl", platform="x_v2"))
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ximgctx.adapters._common import AdapterError
from ximgctx.data.record import Post, Reply

#: platforms read, each the name of its row in the governance shape table
PLATFORMS = (
    "x_v2", "x_v1", "x_archive_dm", "mastodon", "activitypub", "bluesky", "reddit", "threads", "telegram",
    "discord", "slack", "instagram",
)  # fmt: skip
_TEXT_KEYS = ("full_text", "text", "content", "body", "selftext", "caption", "message")
_ID_KEYS = ("id_str", "id", "uri", "name", "message_id", "ts", "cid")
_HANDLE_KEYS = ("username", "screen_name", "handle", "acct", "did", "id", "id_str", "name")
_TAG = re.compile(r"<[^>]+>")


def _text(record: dict[str, Any]) -> str:
    note = record.get("note_tweet")  # X v2 long posts
    if isinstance(note, dict) and isinstance(note.get("text"), str):
        return note["text"]
    rec = record.get("record")  # Bluesky: the post record holds the text
    if isinstance(rec, dict) and isinstance(rec.get("text"), str):
        return rec["text"]
    parts = []
    if isinstance(record.get("title"), str):  # Reddit submissions: title and body
        parts.append(record["title"])
    for key in _TEXT_KEYS:
        v = record.get(key)
        if isinstance(v, list):  # Telegram Desktop: text as a list of strings and entity objects
            v = "".join(
                x if isinstance(x, str) else str(x.get("text", "")) for x in v if isinstance(x, (str, dict))
            )
        if isinstance(v, str) and v:
            if key == "content" and "<" in v:  # Mastodon / ActivityPub HTML
                v = html.unescape(_TAG.sub(" ", v)).strip()
            parts.append(v)
            break
    return "\n".join(parts)


def _id(record: dict[str, Any], fallback: str) -> str:
    for key in _ID_KEYS:
        v = record.get(key)
        if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
            return str(v)
    return fallback


def _author_name(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in _HANDLE_KEYS:
            v = value.get(key)
            if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
                return str(v)
        return None
    return None if value is None or isinstance(value, bool) else str(value)


def _reply(record: dict[str, Any]) -> tuple[Reply, Any]:
    for key in ("author", "user", "account", "from", "sender", "owner", "attributedTo", "username"):
        if record.get(key) is not None:
            return Reply(text=_text(record), author=_author_name(record[key])), record[key]
    return Reply(text=_text(record)), None


def _unwrap(record: dict[str, Any], platform: str | None) -> Iterator[dict[str, Any]]:
    """The records inside an envelope, each a dict the shape table reads."""
    if "tweet" in record and isinstance(record["tweet"], dict) and len(record) == 1:
        yield record["tweet"]  # X archive tweets.js
    elif isinstance(record.get("data"), (dict, list)) and "kind" not in record:  # X v2 response
        data, includes = record["data"], record.get("includes")
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict):
                yield {**item, **({"includes": includes} if includes else {})}
    elif record.get("kind") and isinstance(record.get("data"), dict):  # Reddit listing child
        inner = record["data"]
        if isinstance(inner.get("children"), list):
            for child in inner["children"]:
                if isinstance(child, dict):
                    yield from _unwrap(child, platform)
        else:
            yield {"kind": record["kind"], **inner}
    elif isinstance(record.get("dmConversation"), dict):  # X archive direct messages: one per message
        conv = record["dmConversation"]
        for m in conv.get("messages") or []:
            if isinstance(m, dict):
                yield {"dmConversation": {"conversationId": conv.get("conversationId")}, **m}
    elif isinstance(record.get("messages"), list) and isinstance(record.get("channel"), dict):  # Discord
        for m in record["messages"]:
            if isinstance(m, dict):
                yield {"guild": record.get("guild"), "channel": record["channel"], **m}
    elif record.get("type") == "Create" and isinstance(record.get("object"), dict):  # ActivityPub
        obj = record["object"]
        yield {**obj, **{k: record[k] for k in ("to", "cc", "@context") if k in record and k not in obj}}
    elif isinstance(record.get("thread"), dict):  # Bluesky getPostThread
        yield record["thread"]
    elif isinstance(record.get("post"), dict) and "uri" in record["post"]:  # Bluesky feed item
        yield record["post"]
    else:
        yield record


def post_from_raw(
    record: dict[str, Any], *, platform: str | None = None, fallback_id: str = ""
) -> list[Post]:
    """The posts one raw export record holds (an envelope may hold several); ``platform`` (one of
    :data:`PLATFORMS`) is written as ``meta["export_shape"]`` when given, else governance recognises the
    shape by its keys."""
    if not isinstance(record, dict):
        raise AdapterError(f"a raw export record must be a JSON object, got {type(record).__name__}")
    if platform is not None and platform not in PLATFORMS:
        raise AdapterError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    out = []
    for i, rec in enumerate(_unwrap(record, platform)):
        found = rec.get("replies")
        raw_replies: list[Any] = found if isinstance(found, list) else []
        if "post" in rec and isinstance(rec["post"], dict):  # a Bluesky thread node
            raw_replies = [r.get("post", r) for r in raw_replies if isinstance(r, dict)]
            rec = {**rec["post"]}
        replies, authors = [], []
        for r in raw_replies:
            if isinstance(r, dict):
                reply, who = _reply(r)
                replies.append(reply)
                if isinstance(who, dict):
                    authors.append(who)
            elif isinstance(r, str):
                replies.append(Reply(text=r))
        meta = {k: v for k, v in rec.items() if k != "replies"}
        if authors:
            meta["reply_authors"] = authors
        if platform is not None:
            meta["export_shape"] = platform
        out.append(Post(id=_id(rec, f"{fallback_id}#{i}"), text=_text(rec), replies=replies, meta=meta))
    return out


def iter_raw_export(path: str | Path, *, platform: str | None = None) -> Iterator[Post]:
    """Posts of a raw export file: JSON Lines, a JSON array or object, or an X archive ``.js`` file
    (``window.YTD.tweets.part0 = [...]``). Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise AdapterError(f"{path}: cannot read the export: {e}") from e
    stripped = re.sub(r"^\s*window\.YTD\.[\w.]+\s*=\s*", "", text)
    try:
        records: list[tuple[int, Any]] = list(enumerate(_as_list(json.loads(stripped)), 1))
    except json.JSONDecodeError:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise AdapterError(f"{path}:{n}: not JSON: {e.msg}") from e
    for n, rec in records:
        try:
            yield from post_from_raw(rec, platform=platform, fallback_id=f"{path.stem}:{n}")
        except AdapterError as e:
            raise AdapterError(f"{path}:{n}: {e}") from e


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
