"""The queue in the service: the labeling page at ``/queue`` and the ``/v1/queue/...`` routes.

Labelers authenticate with their labeler token, as ``Authorization: Bearer TOKEN`` (scripts) or through the
page's login form, which opens a session kept in an HttpOnly, SameSite=Strict cookie. They only ever read
items leased to them. Operators (the service's API keys) add items and read the statistics:

* ``GET /queue``: the page (login form, or the labeler's current item: image, text, replies, the tasks with
  their question and a definition beside each label, a "can't tell" per task, a note, the labeler's
  progress); ``POST /queue/login`` / ``/queue/logout`` (deletes the session row). Tasks on the image
  (``source: image``) are not asked about a post without one. The model's scores follow the operator's
  ``QueueConfig.show_scores``: ``never`` (default: a labeler is not anchored on the model), ``after`` (sent
  only in the answer to a stored vote, shown beside the labels chosen), or ``always``;
* ``POST /v1/queue/lease``: the labeler's item; ``GET /v1/queue/items/{id}``; ``GET /queue/items/{id}/image``;
* ``POST /v1/queue/items/{id}/vote`` ``{labels, cant_tell, note}``: stored as rows; it changes served answers
  only when the store's rule makes it effective (default: k = 2 agreeing labelers); ``POST
  /v1/queue/items/{id}/release`` ``{reason, note}`` (optional): skip it; with a reason the skip is stored
  and the post is not offered to this labeler again;
* ``POST /v1/queue/items`` and ``GET /v1/queue/stats``: API keys with the ``admin`` scope.

Every ``review`` decision of ``/v1/moderations`` is queued too (:func:`queue_reviews`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ximgctx._extras import missing_extra, require

try:
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:
    raise missing_extra(e, feature="the labeling queue's page and API") from None

from ximgctx.data.record import Post
from ximgctx.queue.store import LoginError, QueueError, QueueStore
from ximgctx.serve.auth import Caller, caller
from ximgctx.serve.errors import ServiceError

logger = logging.getLogger(__name__)

__all__ = ["COOKIE", "queue_reviews", "queue_router", "static_files"]

COOKIE = "ximgctx_queue"  # the session cookie of the page
STATIC = Path(__file__).with_name("static")
_KEYS = "1234567890qwertyuiopadfghjklzxcvbm"  # option shortcuts, in order (n: note, s: skip)


class VoteIn(BaseModel):
    """``POST /v1/queue/items/{id}/vote``."""

    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str | list[str]]  # task -> label (multiclass) or labels (multilabel, may be empty)
    cant_tell: list[str] = Field(default_factory=list, max_length=256)  # tasks the labeler cannot tell
    note: str = Field("", max_length=2000)  # why the post means what it means


class ReleaseIn(BaseModel):
    """``POST /v1/queue/items/{id}/release``: a skip, with its reason (``SKIP_REASONS``) when given."""

    model_config = ConfigDict(extra="forbid")
    reason: str | None = None
    note: str = Field("", max_length=2000)


class ItemsIn(BaseModel):
    """``POST /v1/queue/items``: posts (canonical records; ``image`` a data URL) to queue."""

    model_config = ConfigDict(extra="forbid")
    posts: list[dict[str, Any]] = Field(max_length=1000)
    source: str = "file"  # review | select | file
    gold: dict[str, dict[str, str | list[str]]] = Field(default_factory=dict)  # post id -> known labels
    priority: int | None = None  # overrides the source's priority


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


def _templates() -> Any:
    jinja2 = require("jinja2", feature="the labeling queue's page")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(STATIC), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("page.html")


def queue_reviews(store: QueueStore, posts: list[Post], results: list[Any]) -> int:
    """Queue the posts a moderation decision sent to ``review`` (governed on the way in).

    A request's post id is the client's (or ``input-N``), so the item is keyed by the post's content
    instead: the same post moderated twice waits once, two posts sent as ``input-0`` wait as two."""
    import dataclasses
    import hashlib

    review = []
    for post, result in zip(posts, results, strict=True):
        if getattr(result, "decision", None) != "review":
            continue
        h = hashlib.sha256()
        for part in (post.id, post.text, *(r.text for r in post.replies)):
            h.update(part.encode("utf-8") + b"\0")
        h.update(post.image if isinstance(post.image, bytes) else b"")
        meta = {**post.meta, "request_post_id": post.id}
        review.append(dataclasses.replace(post, id=f"review-{h.hexdigest()[:24]}", meta=meta))
    return store.enqueue(review, source="review").added if review else 0


def _task_view(
    tasks: list[Any],
    scores: dict[str, dict[str, float]] | None,
    guides: dict[str, Any] | None = None,
    *,
    image: bool = True,
) -> list[dict[str, Any]]:
    """The tasks as the page shows them: the task's question, options with their shortcut key, definition
    and (only when given) the model's score, and a "can't tell" with its key. Image tasks are left out
    for a post without an image."""
    out, i = [], 0

    def key() -> str:
        nonlocal i
        i += 1
        return _KEYS[i - 1] if i <= len(_KEYS) else ""

    for t in tasks:
        if t.source == "image" and not image:
            continue
        guide = (guides or {}).get(t.name)
        options = []
        for label in t.labels:
            score = (scores or {}).get(t.name, {}).get(label)
            definition = guide.labels.get(label, "") if guide is not None else ""
            options.append({"label": label, "key": key(), "score": score, "definition": definition})
        question = guide.question if guide is not None else ""
        out.append(
            {
                "name": t.name,
                "kind": t.kind,
                "source": t.source,
                "question": question,
                "options": options,
                "cant_tell_key": key(),
            }
        )
    return out


class _Routes:
    """The handlers, over one store inside one service (its auth check, error type and model)."""

    def __init__(self, service: Any, store: QueueStore) -> None:
        self.service, self.store, self.page = service, store, _templates()

    # ------------------------------------------------------------------------------------ helpers
    def fail(self, e: QueueError) -> Exception:
        return ServiceError(e.status, str(e), "invalid_request_error", e.code)

    def labeler(self, request: Request) -> int:
        """The labeler of a request: ``Bearer`` labeler token, or the page's session cookie."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() == "bearer" and token.strip():
                return self.store.labeler_for_token(token.strip())
            session = request.cookies.get(COOKIE)
            if session:
                return self.store.labeler_for_session(session)
        except LoginError as e:
            raise self.fail(e) from None
        message = "log in with your labeler token (Bearer TOKEN, or the /queue page)"
        raise ServiceError(401, message, "invalid_request_error", "invalid_token")

    def operator(self, request: Request) -> Caller:
        """The operator of a request: an API key with the ``admin`` scope (401 without a key, 403 without
        the scope)."""
        who = caller(self.service.config, request)
        if who is None:
            message = "this route needs an API key (Bearer KEY)"
            raise ServiceError(401, message, "invalid_request_error", "invalid_api_key")
        if not who.may("admin"):
            raise ServiceError(
                403,
                f"this API key lacks the 'admin' scope, which {request.method} {request.url.path} needs",
                "permission_error",
                "missing_scope",
            )
        return who

    async def db(self, fn: Any, *args: Any) -> Any:
        """A store call off the event loop, its refusals as OpenAI-style errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except QueueError as e:
            raise self.fail(e) from None

    async def current_scores(self, post: Post) -> dict[str, dict[str, float]] | None:
        """The model's scores now (label memory included), or None when it cannot score the post."""
        try:
            _, (pred,) = await self.service.score([post])
        except Exception:  # noqa: BLE001 - the page still works without scores
            logger.warning("queue: no model scores for an item", exc_info=True)
            return None
        return {name: dict(t.scores) for name, t in pred.tasks.items()}

    @property
    def show_scores(self) -> str:
        return str(self.store.config.show_scores)

    async def view(self, labeler_id: int, item_id: int) -> dict[str, Any]:
        """What the labeler sees: text, replies (without their authors), their progress, and the model's
        scores only under ``show_scores: always``; never meta or labels."""
        item = await self.db(self.store.item_for, labeler_id, item_id)
        scores = None
        if self.show_scores == "always":
            scores = await self.current_scores(item.post) or item.scores
        progress = await self.db(self.store.progress, labeler_id)
        post = {
            "id": item.post.id,
            "text": item.post.text,
            "replies": [{"text": r.text} for r in item.post.replies],
        }
        return {
            "item_id": item.item_id,
            "post": post,
            "image": item.image is not None,
            "scores": scores,
            "state": item.state,
            "expires_at": item.expires_at,
            "progress": progress,
        }

    async def tasks_for(self, item: dict[str, Any] | None) -> list[dict[str, Any]]:
        tasks = await self.db(lambda: self.store.tasks)
        guides = await self.db(self.store.guides)
        scores = item["scores"] if item else None
        return _task_view(tasks, scores, guides, image=bool(item["image"]) if item else True)

    def render(
        self,
        *,
        item: dict | None = None,
        tasks: list[dict[str, Any]] | None = None,
        logged_in: bool = True,
        error: str | None = None,
    ) -> str:
        from ximgctx.queue.models import SKIP_REASONS

        return self.page.render(
            logged_in=logged_in,
            item=item,
            tasks=tasks or [],
            error=error,
            skip_reasons=SKIP_REASONS,
            show_scores=self.show_scores,
        )

    # --------------------------------------------------------------------------------------- page
    async def queue_page(self, request: Request) -> Response:
        try:
            who = self.labeler(request)
        except ServiceError:
            return HTMLResponse(self.render(logged_in=False))
        lease = await self.db(self.store.lease, who)
        item = await self.view(who, lease.item_id) if lease is not None else None
        tasks = await self.tasks_for(item) if item is not None else []
        return HTMLResponse(self.render(item=item, tasks=tasks), headers={"Cache-Control": "no-store"})

    async def login(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        try:
            session = await self.db(self.store.login, token)
        except ServiceError as e:
            return HTMLResponse(self.render(logged_in=False, error=e.message), status_code=401)
        resp = RedirectResponse("/queue", status_code=303)
        resp.set_cookie(
            COOKIE,
            session,
            max_age=int(self.store.config.session_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return resp

    async def logout(self, request: Request) -> Response:
        """The session row is deleted (the cookie stops working everywhere), then the cookie."""
        session = request.cookies.get(COOKIE)
        if session:
            await self.db(self.store.logout, session)
        resp = RedirectResponse("/queue", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def image(self, item_id: int, request: Request) -> Response:
        item = await self.db(self.store.item_for, self.labeler(request), item_id)
        if item.image is None:
            raise ServiceError(404, f"item {item_id} has no image", "invalid_request_error", "not_found")
        headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
        return Response(item.image, media_type="image/jpeg", headers=headers)

    # ------------------------------------------------------------------------------------- labeler
    async def lease(self, request: Request) -> dict[str, Any]:
        who = self.labeler(request)
        got = await self.db(self.store.lease, who)
        if got is None:
            return {"item": None}
        item = await self.view(who, got.item_id)
        return {"item": item, "tasks": await self.tasks_for(item)}

    async def read_item(self, item_id: int, request: Request) -> dict[str, Any]:
        item = await self.view(self.labeler(request), item_id)
        return {"item": item, "tasks": await self.tasks_for(item)}

    async def release(self, item_id: int, request: Request, body: ReleaseIn | None = None) -> dict[str, Any]:
        who = self.labeler(request)
        reason, note = (body.reason, body.note) if body is not None else (None, "")
        return {"released": await self.db(lambda: self.store.release(who, item_id, reason=reason, note=note))}

    async def vote(self, item_id: int, body: VoteIn, request: Request) -> dict[str, Any]:
        """A vote is a row; it reaches the served answers only when it changes the post's effective labels
        under the store's rule (by default: k agreeing labelers), and then at once on this replica."""
        who = self.labeler(request)
        result = await self.db(
            lambda: self.store.vote(who, item_id, body.labels, body.note, cant_tell=body.cant_tell)
        )
        if result.changed and self.service.loop is not None:
            await self.service.run(self.service.sync_memory)
        out: dict[str, Any] = {
            "item_id": result.item_id,
            "stored": result.votes,
            "duplicate": result.duplicate,
            "effective_changed": result.changed,
        }
        if self.show_scores != "never":  # the answer is stored: the model's view can no longer steer it
            item = await self.db(self.store.item_for, who, item_id)
            out["model_scores"] = await self.current_scores(item.post) or item.scores
        return out

    # ------------------------------------------------------------------------------------ operator
    async def add_items(self, body: ItemsIn, request: Request) -> dict[str, Any]:
        self.operator(request)
        from ximgctx.serve.inputs import posts_from_records

        posts = await posts_from_records(body.posts, self.service.config, self.service.fetcher)
        gold, source, priority = body.gold or None, body.source, body.priority
        result = await self.db(lambda: self.store.enqueue(posts, source=source, gold=gold, priority=priority))
        return result.to_dict()

    async def stats(self, request: Request) -> dict[str, Any]:
        self.operator(request)
        from ximgctx.queue.report import queue_stats

        return await self.db(queue_stats, self.store)


def queue_router(service: Any, store: QueueStore) -> APIRouter:
    """The page and routes over ``store``, inside the service ``service`` (its auth, errors and model)."""
    r, router = _Routes(service, store), APIRouter()
    router.add_api_route("/queue", r.queue_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/queue/login", r.login, methods=["POST"])
    router.add_api_route("/queue/logout", r.logout, methods=["POST"])
    router.add_api_route("/queue/items/{item_id}/image", r.image, methods=["GET"])
    router.add_api_route("/v1/queue/lease", r.lease, methods=["POST"])
    router.add_api_route("/v1/queue/items/{item_id}", r.read_item, methods=["GET"])
    router.add_api_route("/v1/queue/items/{item_id}/release", r.release, methods=["POST"])
    router.add_api_route("/v1/queue/items/{item_id}/vote", r.vote, methods=["POST"])
    router.add_api_route("/v1/queue/items", r.add_items, methods=["POST"])
    router.add_api_route("/v1/queue/stats", r.stats, methods=["GET"])
    return router
