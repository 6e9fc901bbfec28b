"""The queue in the service: the labeling page at ``/queue`` and the ``/v1/queue/...`` routes.

Labelers authenticate with their labeler token, as ``Authorization: Bearer TOKEN`` (scripts) or through the
page's login form, which opens a session kept in an HttpOnly, SameSite=Strict cookie. They only ever read
items leased to them. Operators (the service's API keys) add items and read the statistics:

* ``GET /queue``: the page (login form, or the labeler's current item: image, text, replies, model scores,
  the model's tasks and a note); ``POST /queue/login`` / ``/queue/logout``;
* ``POST /v1/queue/lease``: the labeler's item; ``GET /v1/queue/items/{id}``; ``GET /queue/items/{id}/image``;
* ``POST /v1/queue/items/{id}/vote`` ``{labels, note}``: stored, then added to the label memory at once
  (the path ``/v1/feedback`` takes); ``POST /v1/queue/items/{id}/release``: skip it;
* ``POST /v1/queue/items`` (API key): posts to queue; ``GET /v1/queue/stats`` (API key).

Every ``review`` decision of ``/v1/moderations`` is queued too (:func:`queue_reviews`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from ximgctx.data.post import Post
from ximgctx.hitl.queue.store import LoginError, QueueError, QueueStore

logger = logging.getLogger(__name__)

__all__ = ["COOKIE", "queue_reviews", "queue_router", "static_files"]

COOKIE = "ximgctx_queue"  # the session cookie of the page
STATIC = Path(__file__).with_name("static")
_KEYS = "1234567890qwertyuiopadfghjklzxcvbm"  # option shortcuts, in order (n: note, s: skip)


class VoteIn(BaseModel):
    """``POST /v1/queue/items/{id}/vote``."""

    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str | list[str]]  # task -> label (multiclass) or labels (multilabel, may be empty)
    note: str = Field("", max_length=2000)  # why the post means what it means


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
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(STATIC), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("page.html")


def queue_reviews(store: QueueStore, posts: list[Post], results: list[Any]) -> int:
    """Queue the posts a moderation decision sent to ``review`` (governed on the way in)."""
    review = [p for p, r in zip(posts, results, strict=True) if getattr(r, "decision", None) == "review"]
    if not review:
        return 0
    return store.enqueue(review, source="review").added


def _task_view(tasks: list[Any], scores: dict[str, dict[str, float]] | None) -> list[dict[str, Any]]:
    """The tasks as the page shows them: options with their shortcut key and the model's score."""
    out, i = [], 0
    for t in tasks:
        options = []
        for label in t.labels:
            score = (scores or {}).get(t.name, {}).get(label)
            options.append({"label": label, "key": _KEYS[i] if i < len(_KEYS) else "", "score": score})
            i += 1
        out.append({"name": t.name, "kind": t.kind, "options": options})
    return out


def queue_router(service: Any, store: QueueStore) -> APIRouter:
    """The page and routes over ``store``, inside the service ``service`` (its auth, errors and model)."""
    from ximgctx.serve.app import ServiceError, _authorized

    router = APIRouter()
    page = _templates()

    def fail(e: QueueError) -> ServiceError:
        return ServiceError(e.status, str(e), "invalid_request_error", e.code)

    def labeler(request: Request) -> int:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() == "bearer" and token.strip():
                return store.labeler_for_token(token.strip())
            session = request.cookies.get(COOKIE)
            if session:
                return store.labeler_for_session(session)
        except LoginError as e:
            raise fail(e) from None
        raise ServiceError(
            401,
            "log in with your labeler token (Bearer TOKEN, or the /queue page)",
            "invalid_request_error",
            "invalid_token",
        )

    def operator(request: Request) -> None:
        if not _authorized(service, request):
            raise ServiceError(
                401, "this route needs an API key (Bearer KEY)", "invalid_request_error", "invalid_api_key"
            )

    async def db(fn: Any, *args: Any) -> Any:
        """A store call off the event loop, its refusals as OpenAI-style errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except QueueError as e:
            raise fail(e) from None

    async def current_scores(post: Post) -> dict[str, dict[str, float]] | None:
        """The model's scores now (label memory included), or None when it cannot score the post."""
        try:
            (pred,) = await service.predictions.submit([post])
        except Exception:  # noqa: BLE001 - the page still works without scores
            logger.warning("queue: no model scores for an item", exc_info=True)
            return None
        return {name: dict(t.scores) for name, t in pred.tasks.items()}

    async def view(labeler_id: int, item_id: int) -> dict[str, Any]:
        item = await db(store.item_for, labeler_id, item_id)
        scores = await current_scores(item.post) or item.scores
        post = item.post.to_dict()
        post.pop("image", None)
        post["replies"] = [{"text": r["text"]} for r in post["replies"]]  # labelers don't see who replied
        post.pop("meta", None)
        return {
            "item_id": item.item_id,
            "post": post,
            "image": item.image is not None,
            "scores": scores,
            "state": item.state,
            "expires_at": item.expires_at,
        }

    @router.get("/queue", response_class=HTMLResponse)
    async def queue_page(request: Request) -> Response:
        try:
            who = labeler(request)
        except ServiceError:
            return HTMLResponse(page.render(logged_in=False, item=None, tasks=[], error=None))
        lease = await db(store.lease, who)
        item = await view(who, lease.item_id) if lease is not None else None
        tasks = _task_view(store.tasks, item["scores"] if item else None)
        return HTMLResponse(page.render(logged_in=True, item=item, tasks=tasks, error=None))

    @router.post("/queue/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        try:
            session = await db(store.login, token)
        except ServiceError as e:
            html = page.render(logged_in=False, item=None, tasks=[], error=e.message)
            return HTMLResponse(html, status_code=401)
        resp = RedirectResponse("/queue", status_code=303)
        resp.set_cookie(
            COOKIE,
            session,
            max_age=int(store.config.session_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return resp

    @router.post("/queue/logout")
    async def logout() -> Response:
        resp = RedirectResponse("/queue", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @router.get("/queue/items/{item_id}/image")
    async def image(item_id: int, request: Request) -> Response:
        item = await db(store.item_for, labeler(request), item_id)
        if item.image is None:
            raise ServiceError(404, f"item {item_id} has no image", "invalid_request_error", "not_found")
        headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
        return Response(item.image, media_type="image/jpeg", headers=headers)

    @router.post("/v1/queue/lease")
    async def lease(request: Request) -> dict[str, Any]:
        who = labeler(request)
        got = await db(store.lease, who)
        if got is None:
            return {"item": None}
        return {
            "item": await view(who, got.item_id),
            "tasks": _task_view(store.tasks, None),
        }

    @router.get("/v1/queue/items/{item_id}")
    async def read_item(item_id: int, request: Request) -> dict[str, Any]:
        return {"item": await view(labeler(request), item_id)}

    @router.post("/v1/queue/items/{item_id}/release")
    async def release(item_id: int, request: Request) -> dict[str, Any]:
        return {"released": await db(store.release, labeler(request), item_id)}

    @router.post("/v1/queue/items/{item_id}/vote")
    async def vote(item_id: int, body: VoteIn, request: Request) -> dict[str, Any]:
        who = labeler(request)
        result = await db(store.vote, who, item_id, body.labels, body.note)
        memory = None
        if not result.duplicate and not result.gold and service.memory_dir is not None:
            memory = await remember(who, item_id, result.labels, body.note)
        return {
            "item_id": result.item_id,
            "stored": result.votes,
            "duplicate": result.duplicate,
            "memory": memory,
        }

    async def remember(who: int, item_id: int, labels: dict[str, Any], note: str) -> dict[str, Any]:
        """The vote into the label memory, through the service's feedback path (governed, saved at once)."""
        item = await db(store.item_for, who, item_id)
        post = item.post
        post.labels = dict(labels)
        reviewer = "queue:" + (await db(store.labeler_digest, who))[:16]
        try:
            return await service.run(service._add_feedback, post, reviewer, note)
        except (ServiceError, QueueError, ValueError) as e:  # the vote stays stored; the memory skipped it
            return {"error": getattr(e, "message", str(e))}

    @router.post("/v1/queue/items")
    async def add_items(body: ItemsIn, request: Request) -> dict[str, Any]:
        operator(request)
        from ximgctx.hitl.queue.ingest import posts_from_records

        posts = posts_from_records(body.posts, service.config)
        result = await db(
            lambda: store.enqueue(posts, source=body.source, gold=body.gold or None, priority=body.priority)
        )
        return result.to_dict()

    @router.get("/v1/queue/stats")
    async def stats(request: Request) -> dict[str, Any]:
        operator(request)
        from ximgctx.hitl.queue.report import queue_stats

        return await db(queue_stats, store)

    return router
