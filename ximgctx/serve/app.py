"""The moderation and search service: ``create_app(...)`` builds the FastAPI app ``ximgctx serve`` runs.

Routes (every ``/v1/`` route and ``/metrics`` need ``Authorization: Bearer KEY`` unless the server runs
``--no-auth`` on loopback):

* ``POST /v1/moderations``: OpenAI's request and ``ModerationCreateResponse`` (see
  :mod:`ximgctx.inference.openai_format`), plus ``decision`` and ``explanation`` per result;
* ``POST /v1/predict``: every task's scores and labels for the same inputs;
* ``POST /v1/search``: posts of the index by text, image (a data URL) or post id, with label filters;
* ``POST /v1/feedback`` (scope ``review``): a reviewer's labels for a post, governed, stored as a row of the
  loop store under the key's identity (:mod:`ximgctx.queue.loop`), effective on the next request;
  ``DELETE /v1/feedback/{id}`` (scope ``admin``): that row stops counting, with an audit row;
  ``GET /v1/memory/history[?post=ID]`` (scope ``admin``): the store's rows and audit trail;
* ``GET /v1/models``: the served model (OpenAI's model list, with ``version``, ``digest`` and ``loaded_at``);
* ``POST /admin/reload`` (scope ``admin``): swap in another model without a restart (see below);
* ``GET /healthz`` (the process is up), ``GET /readyz`` (model loaded and warmed up: its name, version,
  load time and the previous version), ``GET /metrics``.

Hot swap: the served model is one bundle (:class:`~ximgctx.serve.swap.ServedModel`) that every request reads
once when it starts. ``POST /admin/reload`` with ``{"model": FOLDER, "expected_sha256": ..., "version": ...}``
(a folder under the operator's ``--model-root``; an empty body reloads the configured model, or the version
the model source names, such as the registry's promoted one) loads the new model beside the served one on a
thread of its own (requests keep being answered), verifies it, gives it the server's decode limits and the
label memory derived for it, warms it up, then makes it the served bundle. Requests that started on the old
model, queued ones included, finish on it, and every response's ``model`` (and ``model_version``) names the
model that computed it; the old model is released after its last request. A load that fails (a corrupt
folder, a digest mismatch, other tasks) leaves the served model as it was, and is logged, counted
(``ximgctx_model_swaps_total{outcome="failed"}``) and answered as an error. With a model source
(``Service.model_source``, e.g. ``ximgctx serve --registry-root``), every poll checks which version should be
served and swaps when it changed. Search queries keep being embedded by the model that built the index
(``/v1/search`` reports that model): vectors of two models are not comparable.

Errors are OpenAI-style JSON, ``{"error": {"message", "type", "param", "code"}}``, with ``param`` naming the
field when there is one (:mod:`ximgctx.serve.errors`): 400 (malformed, or an unknown ``model``), 401 (no or
wrong key), 403 (the key lacks the route's scope), 404 (unknown path), 405 (wrong method), 413 (body too
large), 422 (a request the server understood but refuses, such as ungoverned feedback), 429 (the API key's
decode budget is spent, with ``Retry-After``; see :mod:`ximgctx.serve.budget`), 500, 503 (queue full, with
``Retry-After``; or not ready). No error carries a traceback or a server path. A post whose image cannot be
decoded, and an input of a list that cannot be scored (a NUL character, over the length limit, empty), gets
a result naming the problem in its place, not an error for the whole request. ``model`` names the served
version and accepts OpenAI's moderation model names (:mod:`ximgctx.serve.models`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ximgctx._extras import missing_extra

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
except ImportError as e:
    raise missing_extra(e, feature="the service (ximgctx serve)") from None

from ximgctx._json import json_safe
from ximgctx.data.record import Post
from ximgctx.errors import InputError
from ximgctx.inference.openai_format import openai_error_result, openai_mapping, openai_response
from ximgctx.serve.auth import LOCAL, Caller, caller, required_scope
from ximgctx.serve.batching import Batcher, QueueFull
from ximgctx.serve.budget import PixelBudget
from ximgctx.serve.config import ServeConfig
from ximgctx.serve.decode import LargeImageLane
from ximgctx.serve.errors import ServiceError, error_response, install_error_handlers
from ximgctx.serve.fetch import ImageFetcher
from ximgctx.serve.inputs import (
    FeedbackRequest,
    ModerationRequest,
    Rejected,
    ReloadRequest,
    SearchRequest,
    feedback_post,
    inputs_from_request,
)
from ximgctx.serve.metrics import ServiceMetrics
from ximgctx.serve.models import check_model, served_model_name
from ximgctx.serve.swap import ModelSource, ServedModel, SwapError, check_same_tasks, folder_under_root

logger = logging.getLogger(__name__)

__all__ = ["Service", "create_app"]


class Service:
    """What one server process holds: the model, its policy, index and memory, and the batchers."""

    def __init__(
        self,
        predictor: Any,
        config: ServeConfig,
        *,
        policy: Any = None,
        index: Any = None,
        memory_dir: str | Path | None = None,
        governance: Any = None,
        queue: Any = None,
        state: Any = None,
        source: Any = None,
        version: str | None = None,
        expected_sha256: str | None = None,
    ) -> None:
        from ximgctx.inference.moderation import Moderator

        self.config = config
        moderator = Moderator(predictor, policy, explain=config.explain)
        self.policy = moderator.policy
        self.mapping = openai_mapping(self.policy)
        # the served model (swapped whole by swap()); requests read it once, when they start
        self.model = ServedModel(
            predictor,
            moderator,
            served_model_name(predictor, config.model_name, source),  # NAME@DIGEST
            version or _default_version(predictor.model_digest),
            predictor.model_digest,
            str(predictor.model_dir or source or ""),
            base_memory=predictor.memory,
        )
        self.previous: dict[str, Any] | None = None  # the bundle served before this one, described
        self._draining: list[ServedModel] = []  # retired bundles whose requests are not all answered
        # what an empty POST /admin/reload loads: the configured folder (with its pin), unless model_source
        self._configured: ModelSource | None = None
        folder = source if isinstance(source, (str, Path)) else predictor.model_dir
        if folder is not None and Path(folder).is_dir():
            self._configured = ModelSource(Path(folder), expected_sha256, version)
        #: () -> (version, folder, digest) of the model that should be served, or None; read every poll
        self.model_source: Any = None
        self._refused_source: tuple[str, str, str] | None = None  # a source that failed to load (not retried)
        self._swap_lock = asyncio.Lock()
        self._startup_digest = predictor.model_digest
        self.index = index
        # search queries are embedded by the index's model, whatever is served (vectors are per model)
        self.search_model = self.model.describe() if index is not None else None
        self.memory_dir = Path(memory_dir) if memory_dir is not None else None
        self.governance = governance
        self.queue = queue  # a QueueStore: review decisions wait there, /queue and /v1/queue/ serve it
        # the loop's state (feedback and votes as rows, the rule, the generation): the queue's database, or
        # a store given for it alone. The served label memory is derived from it: the memory loaded from
        # files (``base``) plus the store's effective labels, rebuilt when the store's generation moves.
        self.loop = None
        store = state if state is not None else queue
        if store is not None:
            from ximgctx.queue.loop import LoopState

            self.loop = LoopState(store)
        self._base_memory = predictor.memory  # the memory loaded from files (built by the startup model)
        self._files_epoch = 0  # bumped when erasures change the files' memory: every bundle rebuilds
        self._poller: asyncio.Task | None = None
        self.watch: Any = None  # erasures and acknowledgements (ximgctx.serve.state_watch)
        if self.loop is not None:
            from ximgctx.serve.state_watch import StateWatch

            self.watch = StateWatch(self)
        self.metrics = ServiceMetrics()
        self.metrics.served(self.model.name, self.model.version, self.model.digest, self.model.loaded_at)
        self.fetcher = ImageFetcher.from_config(config, on_fetch=self.metrics.url_fetch)
        self.budget = PixelBudget.from_config(config, self.metrics)  # pixels decoded per request and per key
        self.large_images = LargeImageLane(lambda: self.model.processor, config.large_image_pixels)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ximgctx-model")
        common: dict[str, Any] = {
            "max_batch_size": config.max_batch_size,
            "max_wait_ms": config.max_wait_ms,
            "max_queue": config.max_queue,
            "on_batch": self.metrics.observe_batch,
            "on_depth": self.metrics.set_depth,
        }
        self.moderations = Batcher("moderations", self._moderate, self.executor, **common)
        self.predictions = Batcher("predict", self._predict, self.executor, **common)
        self.ready = False

    # the served model, as before bundles (the bundle a request pinned is what answers it)
    @property
    def predictor(self) -> Any:
        return self.model.predictor

    @property
    def moderator(self) -> Any:
        return self.model.moderator

    @property
    def model_name(self) -> str:
        return self.model.name

    def _moderate(self, items: list[tuple[ServedModel, Post]]) -> list[Any]:
        return _per_model(items, lambda served, posts: served.moderator.moderate(posts))

    def _predict(self, items: list[tuple[ServedModel, Post]]) -> list[Any]:
        return _per_model(items, lambda served, posts: served.predictor.predict(posts))

    def pinned(self) -> Any:
        """``with service.pinned() as served``: the served bundle, counted in flight until the block ends
        (a swap meanwhile leaves this request on it)."""
        return self.model.pin(self._idle)

    def _idle(self, bundle: ServedModel) -> None:
        """A retired bundle's last request was answered: release it."""
        if bundle in self._draining:
            self._draining.remove(bundle)
        logger.info("model %s (version %s): last request answered; released", bundle.name, bundle.version)
        bundle.release()
        self.metrics.draining(len(self._draining))

    async def score(self, posts: list[Post]) -> tuple[ServedModel, list[Any]]:
        """Predictions of the served model for ``posts`` (through the batcher), and the bundle that made
        them."""
        with self.pinned() as served:
            prepared = await self.large_images.prepare(posts, served.processor)
            return served, await self._submit(self.predictions, served, prepared)

    # ------------------------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        self.moderations.start()
        self.predictions.start()
        await self.run(self.model.moderator.moderate, [_WARM])
        if self.loop is not None:
            await self.run(self.watch.refresh)
        if self.loop is not None or self.model_source is not None:
            self._poller = asyncio.create_task(self._poll())
        self.ready = True

    async def _poll(self) -> None:
        """Watch the store's generation; when another process changed it, apply its erasures, rebuild the
        memory cache and acknowledge the generation (:class:`~ximgctx.serve.state_watch.StateWatch`). Then
        ask the model source (when there is one) which model should be served, and swap when it changed."""
        while True:
            await asyncio.sleep(self.config.state_poll_s)
            if self.loop is not None:
                try:
                    generation = await asyncio.to_thread(self.loop.generation)
                    if generation != self.watch.generation:
                        await self.run(self.watch.refresh)
                    else:
                        await asyncio.to_thread(self.watch.heartbeat)
                except Exception:  # noqa: BLE001 - a store hiccup must not stop the watch; the next poll retries
                    logger.exception("loop store: could not refresh the label memory")
            if self.model_source is not None:
                try:
                    await self._follow_source()
                except Exception:  # noqa: BLE001 - a failed swap is logged and counted; the model stays
                    logger.exception("model source: could not follow it")

    async def _follow_source(self) -> None:
        """Swap to the model the source names when it is not the served one. A source that failed to load
        is not retried until the source has named another (the failure was logged and counted once)."""
        assert self.model_source is not None
        want = await asyncio.to_thread(self.model_source)
        if want is None:
            self._refused_source = None
            return
        version, folder, digest = str(want[0]), Path(want[1]), str(want[2] or "")
        served = self.model
        if version == served.version and (not digest or digest == served.digest):
            self._refused_source = None  # named again after another, a refused source is tried again
            return
        if digest and digest == served.digest:  # the served weights under another version label: relabel
            logger.info("model source: %s is now version %s (was %s)", served.name, version, served.version)
            served.version = version
            self.metrics.served(served.name, served.version, served.digest, served.loaded_at)
            return
        key = (version, str(folder), digest)
        if key == self._refused_source or self._swap_lock.locked():
            return
        try:
            await self.swap(ModelSource(folder, digest or None, version), why="model source")
        except ServiceError:
            self._refused_source = key
        else:
            self._refused_source = None

    # ------------------------------------------------------------------------------------- hot swap
    async def reload(self, req: Any, who: Caller = LOCAL) -> dict[str, Any]:
        """``POST /admin/reload``: swap in the model the body names (a folder under ``--model-root``), or
        the configured one (the model source's, else the folder the server started with)."""
        if req is not None and req.model is not None:
            try:
                folder = folder_under_root(req.model, self.config.model_root)
            except SwapError as e:
                self.metrics.swap("refused", 0.0)
                raise ServiceError(
                    400, str(e), "invalid_request_error", "model_not_allowed", param="model"
                ) from None
            source = ModelSource(folder, req.expected_sha256, req.version)
        else:
            source = await self._configured_source(req)
        old = self.model
        pin = source.expected_sha256 or ""
        if source.version in (None, old.version) and old.digest is not None and pin in ("", old.digest):
            from ximgctx.inference.predictor import model_digest

            if await asyncio.to_thread(model_digest, source.folder) == old.digest:
                return {"object": "model.reload", "changed": False, "previous": old.describe(),
                        "model": old.describe(), "seconds": 0.0}  # fmt: skip
        start = time.perf_counter()
        new = await self.swap(source, why=f"POST /admin/reload by {who.identity}")
        return {
            "object": "model.reload",
            "changed": True,
            "previous": old.describe(),
            "model": new.describe(),
            "seconds": round(time.perf_counter() - start, 3),
        }

    async def _configured_source(self, req: Any) -> ModelSource:
        if self.model_source is not None:
            want = await asyncio.to_thread(self.model_source)
            if want is not None:
                return ModelSource(Path(want[1]), str(want[2] or "") or None, str(want[0]))
        if self._configured is None:
            raise ServiceError(
                400,
                "model: this server has no configured model folder to reload; name one under --model-root",
                "invalid_request_error",
                "no_model_source",
                param="model",
            )
        source = self._configured
        if req is not None and (req.expected_sha256 or req.version):
            source = ModelSource(source.folder, req.expected_sha256 or source.expected_sha256, req.version)
        return source

    async def swap(self, source: ModelSource, *, why: str = "swap") -> ServedModel:
        """Load ``source`` beside the served model (off the event loop and off the model thread), then serve
        it. Requests that started on the old model finish on it; it is released after the last one. A load
        that fails leaves the served model as it was: logged, counted, and raised as a 422
        :class:`~ximgctx.serve.errors.ServiceError` (409 while another swap runs)."""
        if self._swap_lock.locked():
            raise ServiceError(
                409, "a model swap is already running; retry when it is done", "invalid_request_error",
                "swap_in_progress",
            )  # fmt: skip
        async with self._swap_lock:
            old, start = self.model, time.perf_counter()
            try:
                new = await asyncio.to_thread(self._load, source)
                await self.run(self._install, new)
            except Exception as e:  # noqa: BLE001 - any failure to load keeps the served model
                seconds = time.perf_counter() - start
                self.metrics.swap("failed", seconds)
                message = _swap_message(e, source, self.config.model_root)
                logger.error(
                    "model swap (%s) from %s failed after %.2f s: %s; still serving %s (version %s)",
                    why, source.folder, seconds, message, old.name, old.version,
                )  # fmt: skip
                raise ServiceError(
                    422, f"the model was not swapped in: {message}", "invalid_request_error",
                    "model_not_loaded", param="model",
                ) from None  # fmt: skip
            seconds = time.perf_counter() - start
            old.retired = True
            self.previous = old.describe()
            if old.in_flight:
                self._draining.append(old)
            else:
                self._idle(old)
            self.metrics.swap("ok", seconds)
            self.metrics.served(new.name, new.version, new.digest, new.loaded_at)
            self.metrics.draining(len(self._draining))
            logger.info(
                "model swap (%s): serving %s (version %s) after %.2f s; %s (version %s) finishes %d "
                "request(s)",
                why, new.name, new.version, seconds, old.name, old.version, old.in_flight,
            )  # fmt: skip
            return new

    def _load(self, source: ModelSource) -> ServedModel:
        """On a loader thread: the new bundle, verified, limited, with its label memory, warmed up."""
        from ximgctx.inference.moderation import Moderator
        from ximgctx.inference.predictor import Predictor

        old = self.model.predictor
        if not source.folder.is_dir():  # never a hub id: a swap reads a folder on this machine
            raise SwapError(f"{source.folder} is not a model folder")
        predictor = Predictor.from_pretrained(
            source.folder,
            device=old.device,
            dtype=old.dtype,
            batch_size=old.batch_size,
            prefetch=old.prefetch,
            expected_sha256=source.expected_sha256,
            trust_remote_arch=False,
            text_cache=_same_text_cache(old.text_cache),
        )
        check_same_tasks(self.model.tasks, list(predictor.model.config.tasks))
        _limit_decoding(predictor, self.config)
        moderator = Moderator(predictor, self.policy, explain=self.config.explain)
        base = self._base_memory if self._memory_fits(predictor) else None
        if self._base_memory is not None and base is None:
            logger.warning(
                "label memory: the --memory files were built by another model; %s is served without them",
                predictor.model_digest,
            )
        bundle = ServedModel(
            predictor,
            moderator,
            served_model_name(predictor, self.config.model_name, None),
            source.version or _default_version(predictor.model_digest),
            predictor.model_digest,
            str(source.folder),
            base_memory=base,
        )
        if self.loop is not None:
            self._sync_bundle(bundle)  # embeds the store's labeled posts with the new model, here
        else:
            predictor.memory = base
        moderator.moderate([_WARM])
        return bundle

    def _install(self, bundle: ServedModel) -> None:
        """On the model thread (after the batches queued before it): bring the bundle's memory up to the
        store's generation, then serve it (one assignment: a request reads either bundle, whole)."""
        if self.loop is not None:
            self._sync_bundle(bundle)  # only what changed since _load (usually nothing)
        bundle.loaded_at = time.time()
        self.model = bundle

    def _memory_fits(self, predictor: Any) -> bool:
        """Whether the files' label memory was built by ``predictor``'s model (embeddings are per model)."""
        base = self._base_memory
        if base is None or base.dim != predictor.model.config.fusion.hidden_dim:
            return False
        if base.model_digest:
            return bool(base.model_digest == predictor.model_digest)
        return predictor.model_digest == self._startup_digest

    async def stop(self) -> None:
        self.ready = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.watch is not None:
            await asyncio.to_thread(self.watch.leave)
        await self.moderations.stop()
        await self.predictions.stop()
        await self.fetcher.aclose()
        self.large_images.shutdown()
        self.executor.shutdown(wait=True)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` on the model's thread (after the batches queued before it)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # --------------------------------------------------------------------------------------- routes
    async def _read_request(
        self, served: ServedModel, req: ModerationRequest, who: Caller
    ) -> tuple[list[Any], list[Post], list[Post]]:
        """A request's inputs (posts, or a :class:`Rejected` per unreadable one), its posts, and the posts as
        the served model will read them (images charged to the caller's budget, large ones prepared)."""
        check_model(req.model, served.name)
        items = await inputs_from_request(req, self.config, self.fetcher)
        posts = [x for x in items if not isinstance(x, Rejected)]
        self.budget.charge_images(who.identity, [p.image for p in posts])
        return items, posts, await self.large_images.prepare(posts, served.processor)

    async def moderate(self, req: ModerationRequest, who: Caller = LOCAL) -> dict[str, Any]:
        with self.pinned() as served:  # one model answers the whole request
            return await self._moderate_on(served, req, who)

    async def _moderate_on(self, served: ServedModel, req: ModerationRequest, who: Caller) -> dict[str, Any]:
        items, posts, prepared = await self._read_request(served, req, who)
        results = await self._submit(self.moderations, served, prepared) if posts else []
        if self.queue is not None:
            from ximgctx.serve.queue_routes import queue_reviews

            await asyncio.to_thread(queue_reviews, self.queue, posts, results)
        policy = self.policy
        scored = iter(results)
        out = [
            openai_error_result(
                x.error(),
                policy,
                self.mapping,
                post_id=x.post_id,
                decision="allow" if x.empty else policy.unreadable_input,
            )
            if isinstance(x, Rejected)
            else next(scored)
            for x in items
        ]
        return {**openai_response(out, self.mapping, served.name), "model_version": served.version}

    async def predict(self, req: ModerationRequest, who: Caller = LOCAL) -> dict[str, Any]:
        with self.pinned() as served:  # one model answers the whole request
            return await self._predict_on(served, req, who)

    async def _predict_on(self, served: ServedModel, req: ModerationRequest, who: Caller) -> dict[str, Any]:
        items, posts, prepared = await self._read_request(served, req, who)
        scored = iter(await self._submit(self.predictions, served, prepared) if posts else [])
        return {
            "id": f"pred-{time.time_ns():x}",
            "model": served.name,
            "model_version": served.version,
            "results": [
                {"id": x.post_id, "error": x.error()}
                if isinstance(x, Rejected)
                else json_safe(next(scored).to_dict())
                for x in items
            ],
        }

    async def search(self, req: SearchRequest, who: Caller = LOCAL) -> dict[str, Any]:
        if self.index is None:
            raise ServiceError(
                404,
                "this server has no search index (start it with --index DIR)",
                "invalid_request_error",
                "no_index",
            )
        given = [x for x in (req.text, req.image, req.post_id) if x is not None]
        if len(given) != 1:
            raise InputError("give exactly one of text, image or post_id")
        if req.post_id is not None and req.post_id not in getattr(self.index, "_row_of", {}):
            raise ServiceError(
                404, f"no post {req.post_id!r} in the index", "invalid_request_error", "not_found"
            )
        image = None if req.image is None else await self.fetcher.read(req.image, "image")
        if image is not None:
            self.budget.charge_images(who.identity, [image])
        index = self.index
        results = await self.run(
            lambda: index.search(
                req.text,
                image=image,
                post_id=req.post_id,
                k=req.k,
                where=req.where,
                space=req.space,
                nprobe=req.nprobe,
            )
        )
        assert self.search_model is not None
        # the same JSON as ximgctx search; the model is the index's, which embedded the query (its version
        # is /readyz's search_model)
        return json_safe({**results.to_dict(), "model": self.search_model["name"]})

    async def feedback(self, req: FeedbackRequest, who: Caller) -> dict[str, Any]:
        if req.reviewer is not None:
            raise InputError(
                "reviewer: the request may not name the reviewer; the server records the API key's identity "
                f"({who.identity}) as the reviewer"
            )
        if self.loop is None:
            raise ServiceError(
                404,
                "this server has no loop store for feedback (start it with --loop-db DB, or as queue serve)",
                "invalid_request_error",
                "no_store",
            )
        post = await feedback_post(req, self.config, self.fetcher)
        self.budget.charge_images(who.identity, [post.image])
        return await self.run(self._add_feedback, post, who.identity, req.note)

    def _add_feedback(self, post: Post, reviewer: str, note: str) -> dict[str, Any]:
        """A reviewer's feedback as a row in the store (governed; labels checked against the model's tasks),
        then the served memory rebuilt from the store before the answer."""
        from ximgctx.governance import govern

        assert self.loop is not None
        governed = govern([post], self.governance)
        if not governed.posts:
            reasons = sorted(k for k, v in governed.audit.to_dict()["posts"]["dropped"].items() if v)
            raise ServiceError(
                422,
                f"the post may not be used (governance: {', '.join(reasons) or 'dropped'}); nothing was "
                "stored",
                "invalid_request_error",
                "not_governed",
            )
        kept = governed.posts[0]
        if self.watch is not None and self.watch.is_erased(kept):
            raise ServiceError(
                422,
                "the post is by (or replies to) an author erased by a purge; nothing was stored",
                "invalid_request_error",
                "erased_author",
            )
        served = self.model  # the model thread: no swap installs meanwhile
        _check_labels(kept.labels, served.tasks)
        if self._center(served) is None:  # refused before anything is stored
            raise ServiceError(
                409,
                "this server's label memory has no reference statistics yet; create it from governed "
                "reference posts (ximgctx memory add --model DIR --data FILE --reference FILE --memory DIR) "
                "and start the server with --memory DIR",
                "invalid_request_error",
                "no_memory_reference",
            )
        row = self.loop.add_feedback(kept, who=reviewer, note=note)
        self.sync_memory()
        memory = served.predictor.memory
        return {
            "id": row["id"],
            "post_digest": row["post_digest"],
            "reviewer": reviewer,
            "generation": served.generation,
            "memory_size": len(memory) if memory is not None else 0,
        }

    async def remove_feedback(self, row_id: int, who: Caller, why: str) -> dict[str, Any]:
        if self.loop is None:
            raise ServiceError(404, "this server has no loop store", "invalid_request_error", "no_store")
        loop = self.loop
        removed = await asyncio.to_thread(lambda: loop.remove_row(row_id, who=who.identity, why=why))
        if not removed:
            raise ServiceError(
                404, f"no live feedback row {row_id}", "invalid_request_error", "not_found", param="id"
            )
        await self.run(self.sync_memory)
        return {"id": row_id, "removed": True, "generation": self.model.generation}

    async def history(self, post: str | None, limit: int) -> dict[str, Any]:
        """``GET /v1/memory/history`` (scope ``admin``): the store's label rows and audit rows, of one post
        (id or content digest) or of everything, the latest ``limit`` of each."""
        if self.loop is None:
            raise ServiceError(404, "this server has no loop store", "invalid_request_error", "no_store")
        if not 1 <= limit <= 10_000:
            raise InputError("limit: give 1 to 10000")
        loop = self.loop
        found = await asyncio.to_thread(loop.history, post)
        return {"object": "memory.history", "post": post, **{k: v[-limit:] for k, v in found.items()}}

    # --------------------------------------------------------------------------------- label memory
    def sync_memory(self) -> bool:
        """Rebuild the served label memory from the store when its generation moved (on the model thread).
        The memory is the files' memory (if any) plus one entry per post with effective labels; embeddings
        are cached by post content, so a rebuild embeds only new posts. Returns whether it rebuilt."""
        return self._sync_bundle(self.model)

    def _sync_bundle(self, bundle: ServedModel) -> bool:
        """:meth:`sync_memory` for one bundle (the served one, or one being loaded: its own embeddings)."""
        assert self.loop is not None
        generation, entries = self.loop.effective()
        if bundle.generation == generation and bundle.files_epoch == self._files_epoch:
            return False
        epoch = self._files_epoch
        entries = self.watch.kept(entries)  # never a post of an erased author, whatever the rows say
        bundle.predictor.memory = self._derive_memory(bundle, entries)
        bundle.generation, bundle.files_epoch = generation, epoch
        return True

    def _derive_memory(self, bundle: ServedModel, entries: list[Any]) -> Any:
        import numpy as np

        from ximgctx.inference.memory import LabelMemory

        base = bundle.base_memory
        if base is None and not entries:
            return None  # exactly the answers of a server that never had feedback
        if base is not None:
            memory = LabelMemory(list(base.tasks.values()), base.dim, base.config, base.model_digest)
            memory.author_key, memory.center = base.author_key, base.center
            if len(base):
                memory.add_embeddings(base.ids, base.embeddings, base.labels, base.posts, base.authors)
        else:
            memory = LabelMemory.for_predictor(bundle.predictor)
        if memory.center is None:
            center = self._center(bundle)
            if center is None:  # never centred on requests: their senders could steer it
                logger.warning(
                    "label memory: %d effective labels wait for reference statistics (ximgctx memory add "
                    "--reference ... --memory DIR, then serve --memory DIR); served without them",
                    len(entries),
                )
                return base
            memory.center = center
        missing = [e for e in entries if e.post_digest not in bundle.embedded]
        if missing:
            vectors = bundle.predictor.embed([e.post for e in missing])
            for e, vector in zip(missing, vectors, strict=True):
                bundle.embedded[e.post_digest] = vector
        # keep only what is served: a removed or purged post's embedding does not outlive its rows
        bundle.embedded = {e.post_digest: bundle.embedded[e.post_digest] for e in entries}
        if entries:
            memory.add_embeddings(
                [e.entry_id for e in entries],
                np.stack([bundle.embedded[e.post_digest] for e in entries]),
                [e.labels for e in entries],
                [e.post.to_dict() for e in entries],
                [memory.author_digests(e.post) for e in entries],
            )
        return memory

    def _center(self, bundle: ServedModel) -> Any:
        """The reference centre a bundle's memory measures similarity around: the files' memory's (built
        from governed reference posts by that model), else one stored in the loop store for that model (so
        replicas centre alike); None when there is none. Never computed from requests."""
        import numpy as np

        if bundle.base_memory is not None and bundle.base_memory.center is not None:
            return bundle.base_memory.center
        if self.loop is None:
            return None
        center = self.loop.memory_center(bundle.digest)
        return None if center is None else np.asarray(center, dtype=np.float32)

    async def _submit(self, batcher: Batcher, served: ServedModel, posts: list[Post]) -> list[Any]:
        try:
            return await batcher.submit([(served, p) for p in posts])
        except QueueFull as e:
            self.metrics.error("queue_full")
            raise ServiceError(
                503,
                f"the server is busy ({e}); retry later",
                "server_error",
                "queue_full",
                headers={"Retry-After": str(self.config.retry_after_s)},
            ) from None


_WARM = Post(id="warm-up", text="warm up", replies=[])


def _per_model(items: list[tuple[ServedModel, Post]], fn: Any) -> list[Any]:
    """``fn(served, posts)`` over each run of items pinned to one bundle (a batch formed across a swap holds
    two): every post is computed by the model its request started on."""
    from itertools import groupby

    out: list[Any] = []
    for served, group in groupby(items, key=lambda x: x[0]):
        out.extend(fn(served, [post for _, post in group]))
    return out


def _default_version(digest: str | None) -> str:
    """A model's version label when nobody named one: its digest's first 12 hex digits."""
    return digest[:12] if digest else "unversioned"


def _same_text_cache(cache: Any) -> Any:
    """A new model gets a text cache of the same bounds as the served one (its own: entries are per model)."""
    if cache is None:
        return None
    from ximgctx.inference.reply_cache import TextCache

    return TextCache(max_entries=cache.max_entries, max_bytes=cache.max_bytes)


def _swap_message(e: BaseException, source: ModelSource, root: str) -> str:
    """What a failed swap says: the error, without the server's paths (the model root becomes
    ``<model-root>``) or a traceback."""
    from ximgctx.errors import XimgctxError

    message = str(e) if isinstance(e, XimgctxError) else f"{type(e).__name__}: {e}"
    message = message.replace(str(source.folder), "<model folder>")
    if root:
        message = message.replace(str(Path(root).resolve()), "<model-root>").replace(root, "<model-root>")
    return message[:2000]


# ------------------------------------------------------------------------------------------------ app
def _install_handlers(app: FastAPI, service: Service) -> None:
    """Every error as OpenAI-style JSON (:mod:`ximgctx.serve.errors`), counted by kind."""

    def v1_routes() -> set[str]:
        return {p for r in app.routes if (p := getattr(r, "path", "")).startswith("/v1/")}

    install_error_handlers(app, service.metrics.error, v1_routes)


def create_app(
    model: str | Path | Any,
    *,
    config: ServeConfig | None = None,
    policy: Any = None,
    index: str | Path | Any = None,
    memory: str | Path | None = None,
    governance: Any = None,
    device: str = "auto",
    expected_sha256: str | None = None,
    queue: Any = None,
    state: Any = None,
    version: str | None = None,
    model_source: Any = None,
) -> FastAPI:
    """The service as a FastAPI app (for ``uvicorn``, embedding and tests).

    Args:
        model: a model folder, or a :class:`~ximgctx.Predictor`.
        config: limits, batching and keys (:class:`ServeConfig`); ``check_auth`` is enforced.
        policy: a moderation policy or its YAML path (the shipped default when None).
        index: a search index folder or :class:`~ximgctx.SearchIndex`, for ``/v1/search``.
        memory: the label memory folder ``/v1/feedback`` adds to, loaded and blended into every prediction;
            feedback needs it created first from governed reference posts (``ximgctx memory add
            --reference``), never centred on requests.
        governance: the governance policy feedback must pass (the default policy when None).
        expected_sha256: pin the model folder's artifact digest.
        queue: a :class:`~ximgctx.queue.QueueStore`: the labeling page (``/queue``) and ``/v1/queue/``
            routes, and every ``review`` decision queued (labelers log in with their own tokens there). Its
            database is also the loop's store (``state``) unless another is given.
        state: a :class:`~ximgctx.queue.QueueStore` holding the loop's state without mounting the queue:
            ``/v1/feedback`` rows, the label rule and the generation; the served label memory (``memory``'s
            files plus the store's effective labels) is rebuilt when the generation moves (every
            ``config.state_poll_s``), so replicas on one store answer alike.
        version: the served model's version label (responses' ``model_version``; default: its digest's first
            12 hex digits).
        model_source: ``() -> (version, folder, digest) | None``, the model that should be served (such as a
            registry's promoted version), read every ``config.state_poll_s``: a change is swapped in without
            a restart (see the module's "Hot swap").
    """
    from ximgctx.inference.predictor import Predictor

    config = config or ServeConfig()
    config.check_auth()
    if isinstance(model, Predictor):
        predictor = model
    else:
        predictor = Predictor.from_pretrained(model, device=device, expected_sha256=expected_sha256)
    _limit_decoding(predictor, config)
    if memory is not None and Path(memory).exists():
        from ximgctx.inference.memory import LabelMemory

        predictor.memory = LabelMemory.load(memory)
    if index is not None and not hasattr(index, "search_vectors"):
        from ximgctx.inference.search import SearchIndex

        index = SearchIndex.load(index, predictor=predictor)
    service = Service(
        predictor,
        config,
        policy=policy,
        index=index,
        memory_dir=memory,
        governance=governance,
        queue=queue,
        state=state,
        source=model if isinstance(model, (str, Path)) else None,
        version=version,
        expected_sha256=expected_sha256,
    )
    service.model_source = model_source

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="ximgctx", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    _install_handlers(app, service)
    app.add_middleware(_Guard, service=service)
    _install_routes(app, service)
    if queue is not None:
        from ximgctx.serve.queue_routes import queue_router, static_files

        app.include_router(queue_router(service, queue))
        app.mount("/queue/static", static_files(), name="queue-static")
    return app


def _check_labels(labels: dict[str, Any], tasks: Any) -> None:
    """Feedback labels name the model's tasks and fit them (errors name the task)."""
    from ximgctx.data.processor import LabelError, encode_label

    specs = {t.name: t for t in tasks}
    if not labels:
        raise InputError("labels: give at least one task's label")
    for task, value in labels.items():
        if task not in specs:
            raise InputError(f"labels.{task}: not a task of the model (tasks: {sorted(specs)})")
        try:
            encode_label(value, specs[task])
        except LabelError as e:
            raise InputError(f"labels.{task}: {e}") from None


def _version() -> str:
    from ximgctx.version import __version__

    return __version__


def _limit_decoding(predictor: Any, config: ServeConfig) -> None:
    """The server's decode limits (a model folder may only lower them) and confined reads: requests carry
    image bytes only, and any path reaching the processor is refused (the root is an empty private folder)."""
    import tempfile

    from ximgctx.data.images import ImageLimits, ImageRoot

    limits = ImageLimits(max_pixels=config.max_image_pixels, max_bytes=config.max_image_bytes)
    empty = tempfile.mkdtemp(prefix="ximgctx-serve-noimages-")
    predictor.model.processor = predictor.model.build_processor(
        limits=limits, image_root=ImageRoot(empty, confine=True)
    )


class _TooLarge(Exception):
    pass


class _Guard:
    """Pure ASGI middleware: body limit (declared and streamed), auth, readiness, request metrics."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, limit = self.service, self.service.config.max_body_bytes
        start = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in _ROUTES else "other"
        status = {"code": 500}

        async def send_counted(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        async def answer(resp: Response) -> None:
            await resp(scope, receive, send_counted)

        request = Request(scope)
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            declared = limit + 1
        try:
            if declared > limit:
                service.metrics.error("body_too_large")
                await answer(_too_large(limit))
            elif (denied := _denied(service, request, scope)) is not None:
                service.metrics.error("unauthorized" if denied.status_code == 401 else "forbidden")
                await answer(denied)
            elif path.startswith(("/v1/", "/admin/")) and not service.ready:
                await answer(
                    error_response(
                        503,
                        "the model is warming up; retry shortly",
                        "server_error",
                        "not_ready",
                        {"Retry-After": "1"},
                    )
                )
            else:
                received = 0

                async def limited() -> dict:
                    nonlocal received
                    message = await receive()
                    if message["type"] == "http.request":
                        received += len(message.get("body", b""))
                        if received > limit:
                            raise _TooLarge
                    return message

                try:
                    await self.app(scope, limited, send_counted)
                except _TooLarge:
                    service.metrics.error("body_too_large")
                    await answer(_too_large(limit))
        finally:
            service.metrics.observe_request(route, status["code"], time.perf_counter() - start)


def _denied(service: Service, request: Request, scope: dict) -> Response | None:
    """401 without a valid key, 403 when the key lacks the route's scope; None when the call may go on.
    The caller is kept in the request's state (``request.state.caller``) for the routes that record it."""
    path = scope.get("path", "")
    if not (path.startswith(("/v1/", "/admin/")) or path == "/metrics"):
        return None
    if path.startswith("/v1/queue/"):  # labelers' own tokens; the router checks them (and operator scopes)
        return None
    who = caller(service.config, request)
    if who is None:
        return error_response(
            401,
            "missing or invalid API key (Authorization: Bearer KEY)",
            "invalid_request_error",
            "invalid_api_key",
        )
    need = required_scope(scope.get("method", "GET"), path)
    if need is not None and not who.may(need):
        return forbidden(need, f"{scope.get('method', 'GET')} {path}")
    scope.setdefault("state", {})["caller"] = who
    return None


def forbidden(scope_name: str, route: str) -> JSONResponse:
    """403: the key is valid but lacks ``scope_name`` (OpenAI-style error naming the scope)."""
    return error_response(
        403,
        f"this API key lacks the '{scope_name}' scope, which {route} needs",
        "permission_error",
        "missing_scope",
        param=scope_name,
    )


def _too_large(limit: int) -> JSONResponse:
    return error_response(
        413, f"request body over the server's {limit} byte limit", "invalid_request_error", "body_too_large"
    )


_ROUTES = (
    "/v1/moderations",
    "/v1/predict",
    "/v1/search",
    "/v1/feedback",
    "/v1/models",
    "/admin/reload",
    "/healthz",
    "/readyz",
    "/metrics",
)


def _install_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/moderations")
    async def moderations(req: ModerationRequest, request: Request) -> dict[str, Any]:
        return await service.moderate(req, request.state.caller)

    @app.post("/v1/predict")
    async def predict(req: ModerationRequest, request: Request) -> dict[str, Any]:
        return await service.predict(req, request.state.caller)

    @app.post("/v1/search")
    async def search(req: SearchRequest, request: Request) -> dict[str, Any]:
        return await service.search(req, request.state.caller)

    @app.post("/v1/feedback")
    async def feedback(req: FeedbackRequest, request: Request) -> dict[str, Any]:
        return await service.feedback(req, request.state.caller)

    @app.delete("/v1/feedback/{row_id}")
    async def remove_feedback(row_id: int, request: Request, why: str = "") -> dict[str, Any]:
        return await service.remove_feedback(row_id, request.state.caller, why[:2000])

    @app.get("/v1/memory/history")
    async def memory_history(post: str | None = None, limit: int = 1000) -> dict[str, Any]:
        return await service.history(post, limit)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """OpenAI's model list: the served model (and the search index's, when another one)."""
        served, search = service.model.describe(), service.search_model
        listed = [(served, ["moderations", "predict"])]
        if search is not None and search["name"] == served["name"]:
            listed[0][1].append("search")
        elif search is not None:
            listed.append((search, ["search"]))
        return {
            "object": "list",
            "data": [
                {
                    "id": m["name"],
                    "object": "model",
                    "created": int(m["loaded_at"]),
                    "owned_by": "ximgctx",
                    "version": m["version"],
                    "digest": m["digest"],
                    "serves": routes,
                }
                for m, routes in listed
            ],
        }

    @app.post("/admin/reload")
    async def reload(request: Request, req: ReloadRequest | None = None) -> dict[str, Any]:
        return await service.reload(req, request.state.caller)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if not service.ready:
            return error_response(503, "not ready", "server_error", "not_ready", {"Retry-After": "1"})
        served = service.model
        return JSONResponse(
            {
                "status": "ready",
                "model": served.name,
                "version": served.version,
                "digest": served.digest,
                "loaded_at": round(served.loaded_at, 3),
                "previous": service.previous,
                "draining": [
                    {"model": m.name, "version": m.version, "in_flight": m.in_flight}
                    for m in service._draining
                ],  # noqa: E501
                "search_model": service.search_model,
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)
