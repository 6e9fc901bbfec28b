"""Request bodies: OpenAI's moderation input, ximgctx's post context, and images the server may read.

``input`` is what OpenAI's ``/v1/moderations`` takes: a string, a list of strings (one result each), or a
list of content parts ``{"type": "text", "text"}`` / ``{"type": "image_url", "image_url": {"url"}}`` (one
post). Context beyond OpenAI's schema goes in the ``ximgctx`` field, which the official client sends with
``extra_body={"ximgctx": {...}}``: replies, a post id, the author and visibility, per input (a list) or for
a single input (an object).

Images come only as ``data:`` URLs (base64), unless the operator allows http(s) hosts
(``--allow-url-host``), fetched with a size and time limit and no redirects. The server never opens a path
or a ``file://`` URL named in a request.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from ximgctx._extras import missing_extra, require

try:
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:
    raise missing_extra(e, feature="the service's request models") from None

from ximgctx.data.record import Post, PostValidationError, Reply, post_from_dict
from ximgctx.errors import InputError
from ximgctx.serve.config import ServeConfig

__all__ = [
    "FeedbackRequest",
    "ModerationRequest",
    "PostContext",
    "SearchRequest",
    "fetch_image",
    "posts_from_records",
    "posts_from_request",
]

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I
)


class ImageURL(BaseModel):
    url: str


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ReplyIn(BaseModel):
    text: str
    author: str | None = None


class PostContext(BaseModel):
    """ximgctx's extension: what OpenAI's schema has no place for."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None  # the post's id, echoed in results
    replies: list[str | ReplyIn] = Field(default_factory=list)  # the replies under the post, in order
    author: str | None = None  # the post's author (governance of feedback; never echoed)
    visibility: str | None = None  # public / private / ... (governance of feedback)
    meta: dict[str, Any] = Field(default_factory=dict)  # further post metadata


class ModerationRequest(BaseModel):
    """``POST /v1/moderations`` and ``POST /v1/predict``."""

    model: str | None = None
    input: str | list[str] | list[Part]
    ximgctx: PostContext | list[PostContext] | None = None


class SearchRequest(BaseModel):
    """``POST /v1/search``: exactly one of text, image (a data URL) or post_id. ``where`` is the filter of
    :meth:`ximgctx.SearchIndex.search` in any of its forms: ``"intent=protest"``, a list of such strings, or
    ``{"intent": ["protest"]}``."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = None
    post_id: str | None = None
    k: int = Field(10, ge=1, le=1000)
    where: dict[str, str | list[str]] | list[str] | str | None = None
    space: Literal["fused", "image"] | None = None
    nprobe: int | None = Field(None, ge=1, le=65536)


class FeedbackPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str = ""
    image: str | None = None  # a data URL
    replies: list[str | ReplyIn] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a reviewer's labels for a post."""

    model_config = ConfigDict(extra="forbid")

    post: FeedbackPost
    labels: dict[str, str | list[str] | dict[str, float]]
    # refused when given: the reviewer is the API key's identity, never a name the caller writes
    reviewer: str | None = Field(None, max_length=200)
    note: str = Field("", max_length=2000)


# ------------------------------------------------------------------------------------------- images
def _decode_data_url(url: str, limits: ServeConfig, where: str) -> bytes:
    m = _DATA_URL.match(url)
    if m is None:
        raise InputError(f"{where}: not a data: URL")
    payload = url[m.end() :]
    if not m.group("b64"):
        raise InputError(f"{where}: data: URLs must be base64 (';base64,')")
    if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
        raise InputError(f"{where}: image is over the server's {limits.max_image_bytes} byte limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: invalid base64 in the data: URL") from None


def fetch_image(url: str, limits: ServeConfig, where: str) -> bytes:
    """The bytes of an image URL the server may read: a data: URL, or http(s) on an allowed host."""
    if url[:5].lower() == "data:":
        return _decode_data_url(url, limits, where)
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise InputError(
            f"{where}: only data: URLs (and http(s) URLs of allowed hosts) are read; got a "
            f"{scheme or 'path'!r} URL"
        )
    if host not in limits.allow_url_hosts:
        raise InputError(
            f"{where}: host {host!r} is not on this server's allowlist; send the image as a data: URL"
        )
    httpx = require("httpx", feature="reading image URLs of allowed hosts")

    try:
        with httpx.stream("GET", url, timeout=limits.url_timeout_s, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise InputError(f"{where}: the image URL answered HTTP {resp.status_code}")
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > limits.max_image_bytes:
                    raise InputError(
                        f"{where}: image is over the server's {limits.max_image_bytes} byte limit"
                    )
            return bytes(data)
    except httpx.HTTPError as e:
        raise InputError(f"{where}: cannot fetch the image ({type(e).__name__})") from None


# --------------------------------------------------------------------------------------------- posts
def _replies(items: list[str | ReplyIn], limits: ServeConfig, where: str) -> list[Reply]:
    if len(items) > limits.max_replies:
        raise InputError(
            f"{where}.replies: {len(items)} replies, over the server's limit of {limits.max_replies}"
        )
    out = []
    for j, r in enumerate(items):
        text, author = (r, None) if isinstance(r, str) else (r.text, r.author)
        _check_text(text, limits, f"{where}.replies[{j}]")
        out.append(Reply(text=text, author=author))
    return out


def _check_text(text: str, limits: ServeConfig, where: str) -> None:
    if len(text) > limits.max_text_chars:
        raise InputError(
            f"{where}: {len(text)} characters, over the server's limit of {limits.max_text_chars}"
        )
    if "\x00" in text:
        raise InputError(f"{where}: contains a NUL character")


def _context_meta(ctx: PostContext | None) -> dict[str, Any]:
    if ctx is None:
        return {}
    meta = dict(ctx.meta)
    if ctx.author is not None:
        meta["author"] = ctx.author
    if ctx.visibility is not None:
        meta["visibility"] = ctx.visibility
    return meta


def posts_from_request(req: ModerationRequest, limits: ServeConfig) -> list[Post]:
    """The posts a moderation/predict request asks about, in result order."""
    inp = req.input
    if isinstance(inp, list) and not inp:
        raise InputError("input: empty list; give a string, a list of strings or a list of content parts")
    if isinstance(inp, str):
        items: list[tuple[str, bytes | None]] = [(inp, None)]
    elif inp and all(isinstance(x, str) for x in inp):
        items = [(x, None) for x in inp]  # type: ignore[misc]
    else:
        texts, images = [], []
        for k, part in enumerate(inp):
            if isinstance(part, ImagePart):
                images.append(fetch_image(part.image_url.url, limits, f"input[{k}].image_url"))
            else:
                texts.append(part if isinstance(part, str) else part.text)
        if len(images) > 1:
            raise InputError(f"input: {len(images)} images in one post; a post has at most one image")
        items = [("\n".join(texts), images[0] if images else None)]
    if len(items) > limits.max_inputs:
        raise InputError(f"input: {len(items)} inputs, over the server's limit of {limits.max_inputs}")
    ctx = req.ximgctx
    contexts: list[PostContext | None]
    if isinstance(ctx, list):
        if len(ctx) != len(items):
            raise InputError(f"ximgctx: {len(ctx)} contexts for {len(items)} inputs; give one per input")
        contexts = list(ctx)
    else:
        contexts = [ctx] * len(items) if len(items) == 1 else [None] * len(items)
        if ctx is not None and len(items) > 1:
            raise InputError("ximgctx: one context object for several inputs; give a list, one per input")
    posts = []
    for i, ((text, image), c) in enumerate(zip(items, contexts, strict=True)):
        where = f"input[{i}]" if len(items) > 1 else "input"
        _check_text(text, limits, where)
        posts.append(
            Post(
                id=(c.id if c is not None and c.id else f"input-{i}"),
                image=image,  # bytes: decoded by the safe decoder under the server's limits
                text=text,
                replies=_replies(c.replies, limits, f"ximgctx[{i}]") if c is not None else [],
                meta=_context_meta(c),
            )
        )
    return posts


def feedback_post(req: FeedbackRequest, limits: ServeConfig) -> Post:
    """The post a reviewer labeled, with its labels, ready for governance."""
    p = req.post
    _check_text(p.text, limits, "post.text")
    image = fetch_image(p.image, limits, "post.image") if p.image else None
    return Post(
        id=p.id,
        image=image,
        text=p.text,
        replies=_replies(p.replies, limits, "post"),
        labels=dict(req.labels),
        meta=dict(p.meta),
    )


def posts_from_records(records: list[dict[str, Any]], limits: Any) -> list[Post]:
    """Posts sent to ``POST /v1/queue/items``: canonical records whose ``image`` is a data URL (the server
    never opens a path named in a request). Errors name the record."""
    posts = []
    for i, record in enumerate(records):
        image = record.get("image") if isinstance(record, dict) else None
        try:
            post = post_from_dict({k: v for k, v in record.items() if k != "image"}, source="posts", line=i)
        except (PostValidationError, AttributeError) as e:
            raise InputError(f"posts[{i}]: {e}") from None
        if image:
            post.image = fetch_image(str(image), limits, f"posts[{i}].image")
        posts.append(post)
    return posts
