"""Request bodies: OpenAI's moderation input, ximgctx's post context, and images the server may read.

``input`` is what OpenAI's ``/v1/moderations`` takes: a string, a list of strings (one result each), or a
list of content parts ``{"type": "text", "text"}`` / ``{"type": "image_url", "image_url": {"url"}}`` (one
post). Context beyond OpenAI's schema goes in the ``ximgctx`` field, which the official client sends with
``extra_body={"ximgctx": {...}}``: replies, a post id, the author and visibility, per input (a list) or for
a single input (an object).

Problems of one input (a text with a NUL character, a text or reply over ``max_text_chars``, more replies
than ``max_replies``, an input with nothing in it) are that input's own: :func:`inputs_from_request` gives a
:class:`Rejected` in its place and the other inputs are scored (the moderation result carries an
``error`` object, see :mod:`ximgctx.inference.openai_format`). Problems of the request (malformed JSON, more
than ``max_inputs`` inputs, more than one image in one post, an image URL the server does not read,
contexts that do not match the inputs) fail the whole request with a 400 naming the field.

Images come only as ``data:`` URLs (base64), unless the operator allows http(s) hosts
(``--allow-url-host``), fetched by :mod:`ximgctx.serve.fetch` (asynchronously, one deadline, a size limit,
public addresses only, no redirects) after the request's counts were checked. The server never opens a path
or a ``file://`` URL named in a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from ximgctx._extras import missing_extra

try:
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:
    raise missing_extra(e, feature="the service's request models") from None

from ximgctx.data.record import Post, PostValidationError, Reply, post_from_dict
from ximgctx.errors import InputError
from ximgctx.serve.config import ServeConfig
from ximgctx.serve.fetch import ImageFetcher, is_url

__all__ = [
    "FeedbackRequest",
    "ModerationRequest",
    "PostContext",
    "Rejected",
    "ReloadRequest",
    "SearchRequest",
    "inputs_from_request",
    "posts_from_records",
    "posts_from_request",
]


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


class ReloadRequest(BaseModel):
    """``POST /admin/reload``: the model folder to serve (under the server's ``--model-root``; absent: the
    configured model), the digest it must have (its manifest's SHA-256) and the version label to report."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, min_length=1, max_length=1024)
    expected_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    version: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@+-]+$")


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
def _check_url_count(urls: list[str], limits: ServeConfig, where: str) -> None:
    """Refuse a request naming more http(s) image URLs than the server fetches for one request, before any
    fetch."""
    n = sum(1 for u in urls if is_url(u))
    if n > limits.max_url_images:
        raise InputError(
            f"{where}: {n} image URLs in one request, over the server's limit of {limits.max_url_images} "
            "(max_url_images); nothing was fetched"
        )


# --------------------------------------------------------------------------------------------- posts
class InputProblem(InputError):
    """What is wrong with one input; ``code`` is the OpenAI-style error code its result carries."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Rejected:
    """An input that is not scored, in its place among the request's inputs."""

    index: int
    post_id: str
    message: str  # names the field: "input[2]: contains a NUL character"
    code: str  # invalid_input, input_too_large, empty_input
    param: str | None

    @property
    def empty(self) -> bool:
        """Nothing to moderate (decided allow), as opposed to something that could not be read (decided as
        the policy's ``unreadable_input``)."""
        return self.code == "empty_input"

    def error(self) -> dict[str, Any]:
        """OpenAI's error object for the input's result."""
        return {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
        }


def _replies(items: list[str | ReplyIn], limits: ServeConfig, where: str) -> list[Reply]:
    if len(items) > limits.max_replies:
        raise InputProblem(
            f"{where}.replies: {len(items)} replies, over the server's limit of {limits.max_replies}",
            "input_too_large",
        )
    out = []
    for j, r in enumerate(items):
        text, author = (r, None) if isinstance(r, str) else (r.text, r.author)
        _check_text(text, limits, f"{where}.replies[{j}]")
        out.append(Reply(text=text, author=author))
    return out


def _check_text(text: str, limits: ServeConfig, where: str) -> None:
    if len(text) > limits.max_text_chars:
        raise InputProblem(
            f"{where}: {len(text)} characters, over the server's limit of {limits.max_text_chars}",
            "input_too_large",
        )
    if "\x00" in text:
        raise InputProblem(f"{where}: contains a NUL character")


def _context_meta(ctx: PostContext | None) -> dict[str, Any]:
    if ctx is None:
        return {}
    meta = dict(ctx.meta)
    if ctx.author is not None:
        meta["author"] = ctx.author
    if ctx.visibility is not None:
        meta["visibility"] = ctx.visibility
    return meta


async def posts_from_request(
    req: ModerationRequest, limits: ServeConfig, fetcher: ImageFetcher
) -> list[Post]:
    """The posts a moderation/predict request asks about, in result order; the first input's problem is
    an :class:`InputError` (:func:`inputs_from_request` answers each input's own problem in its place)."""
    out = []
    for item in await inputs_from_request(req, limits, fetcher):
        if isinstance(item, Rejected):
            raise InputProblem(item.message, item.code)
        out.append(item)
    return out


async def inputs_from_request(
    req: ModerationRequest, limits: ServeConfig, fetcher: ImageFetcher
) -> list[Post | Rejected]:
    """One :class:`Post` per input of a moderation/predict request, in result order, or a
    :class:`Rejected` where that input has a problem of its own. Problems of the request raise
    :class:`InputError`. Every count is checked before any image is read: one image per post, and at most
    ``max_url_images`` URLs."""
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
                images.append((k, part.image_url.url))
            else:
                texts.append(part if isinstance(part, str) else part.text)
        if len(images) > 1:
            raise InputError(
                f"input: {len(images)} images in one post; a post has at most one image (nothing was fetched)"
            )
        _check_url_count([u for _, u in images], limits, "input")
        image = None
        if images:
            k, url = images[0]
            image = await fetcher.read(url, f"input[{k}].image_url")
        items = [("\n".join(texts), image)]
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
    out: list[Post | Rejected] = []
    for i, ((text, image), c) in enumerate(zip(items, contexts, strict=True)):
        where = f"input[{i}]" if len(items) > 1 else "input"
        post_id = c.id if c is not None and c.id else f"input-{i}"
        try:
            _check_text(text, limits, where)
            at = f"ximgctx[{i}]" if isinstance(ctx, list) else "ximgctx"
            replies = _replies(c.replies, limits, at) if c is not None else []
            if not text.strip() and image is None and not replies:
                raise InputProblem(f"{where}: empty; nothing to moderate", "empty_input")
        except InputProblem as e:
            message = str(e)
            out.append(Rejected(i, post_id, message, e.code, message.split(":", 1)[0]))
            continue
        out.append(
            Post(
                id=post_id,
                image=image,  # bytes: decoded by the safe decoder under the server's limits
                text=text,
                replies=replies,
                meta=_context_meta(c),
            )
        )
    return out


async def feedback_post(req: FeedbackRequest, limits: ServeConfig, fetcher: ImageFetcher) -> Post:
    """The post a reviewer labeled, with its labels, ready for governance."""
    p = req.post
    _check_text(p.text, limits, "post.text")
    image = await fetcher.read(p.image, "post.image") if p.image else None
    return Post(
        id=p.id,
        image=image,
        text=p.text,
        replies=_replies(p.replies, limits, "post"),
        labels=dict(req.labels),
        meta=dict(p.meta),
    )


async def posts_from_records(
    records: list[dict[str, Any]], limits: ServeConfig, fetcher: ImageFetcher
) -> list[Post]:
    """Posts sent to ``POST /v1/queue/items``: canonical records whose ``image`` is a data URL (or an allowed
    URL; the server never opens a path named in a request). Errors name the record."""
    images = [str(r.get("image") or "") if isinstance(r, dict) else "" for r in records]
    _check_url_count([u for u in images if u], limits, "posts")
    posts = []
    for i, record in enumerate(records):
        try:
            post = post_from_dict({k: v for k, v in record.items() if k != "image"}, source="posts", line=i)
        except (PostValidationError, AttributeError) as e:
            raise InputError(f"posts[{i}]: {e}") from None
        posts.append(post)
    for i, (post, image) in enumerate(zip(posts, images, strict=True)):
        if image:
            post.image = await fetcher.read(image, f"posts[{i}].image")
    return posts
