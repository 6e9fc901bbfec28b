"""Hot swap in one process: POST /admin/reload serves model B without a restart; requests that started on A
(running or queued) finish on A and say so; failed loads leave A served; a model source is followed."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import httpx
import pytest

from ximgctx import Post
from ximgctx.inference import Predictor
from ximgctx.inference.moderation import Moderator
from ximgctx.serve import ServeConfig, create_app
from ximgctx.serve.inputs import ModerationRequest
from ximgctx.serve.swap import ModelSource

from .._serve_fixtures import running
from ._swap_fixtures import digest, model_root, served_name

pytestmark = pytest.mark.usefixtures("one_thread")

ADMIN = "admin-key-0123456789abcd"
MODERATOR = "moderator-key-0123456789"
TEXTS = ["see you all saturday", "never again", "when monday hits"]


def _config(**kw) -> ServeConfig:
    keys = [MODERATOR, f"{ADMIN} admin,moderate,search"]
    return ServeConfig(api_keys=keys, model_root=str(model_root()), **kw)


def _post(url: str, path: str, body: dict | None, key: str = ADMIN) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def _get(url: str, path: str, key: str = ADMIN) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _expected_scores(name: str) -> list[dict[str, dict[str, float]]]:
    """The in-process predictions of a model folder for TEXTS (one batch, as the server batches them)."""
    predictor = Predictor.from_pretrained(model_root() / name, device="cpu")
    preds = predictor.predict([Post(id=str(i), text=t) for i, t in enumerate(TEXTS)])
    return [{task: dict(p.tasks[task].scores) for task in p.tasks} for p in preds]


def _served_scores(resp: httpx.Response) -> list[dict[str, dict[str, float]]]:
    return [{task: dict(r["tasks"][task]["scores"]) for task in r["tasks"]} for r in resp.json()["results"]]


def _close(a: list[dict], b: list[dict]) -> bool:
    return all(
        x[t][label] == pytest.approx(y[t][label], abs=1e-6)
        for x, y in zip(a, b, strict=True)
        for t in x
        for label in x[t]
    )


def test_reload_serves_b_with_its_own_scores_and_reports_versions():
    app = create_app(model_root() / "a", config=_config(), device="cpu", version="1")
    with running(app) as url:
        before = _post(url, "/v1/predict", {"input": TEXTS})
        assert before.status_code == 200 and before.json()["model"] == served_name("a")
        assert before.json()["model_version"] == "1"
        assert _served_scores(before) == _expected_scores("a")  # bit for bit: the same batch composition
        assert not _close(_expected_scores("a"), _expected_scores("b"))  # B really answers otherwise

        denied = _post(url, "/admin/reload", {"model": "b"}, key=MODERATOR)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "missing_scope"
        assert _get(url, "/readyz").json()["version"] == "1"

        resp = _post(url, "/admin/reload", {"model": "b", "version": "2", "expected_sha256": digest("b")})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["changed"] is True
        assert (body["previous"]["name"], body["previous"]["version"]) == (served_name("a"), "1")
        assert (body["model"]["name"], body["model"]["version"]) == (served_name("b"), "2")
        assert body["model"]["digest"] == digest("b")

        after = _post(url, "/v1/predict", {"input": TEXTS})
        assert after.json()["model"] == served_name("b") and after.json()["model_version"] == "2"
        assert _served_scores(after) == _expected_scores("b")
        mod = _post(url, "/v1/moderations", {"input": TEXTS[0]}, key=MODERATOR).json()
        assert (mod["model"], mod["model_version"]) == (served_name("b"), "2")
        # B's moderation is B's in-process moderation
        expected = Moderator(Predictor.from_pretrained(model_root() / "b", device="cpu")).moderate(
            [Post(id="0", text=TEXTS[0])]
        )[0]
        got = mod["results"][0]["ximgctx"]["category_scores"]
        assert got == pytest.approx({k: float(v) for k, v in expected.category_scores.items()}, abs=1e-6)

        ready = _get(url, "/readyz").json()
        assert (ready["model"], ready["version"], ready["digest"]) == (served_name("b"), "2", digest("b"))
        assert ready["previous"]["version"] == "1" and ready["previous"]["name"] == served_name("a")
        assert ready["loaded_at"] >= body["previous"]["loaded_at"] and ready["draining"] == []
        (listed,) = _get(url, "/v1/models", key=MODERATOR).json()["data"]
        assert (listed["id"], listed["version"], listed["object"]) == (served_name("b"), "2", "model")
        metrics = _get(url, "/metrics").text
        assert 'ximgctx_model_swaps_total{outcome="ok"} 1.0' in metrics
        info = f'ximgctx_model_info{{digest="{digest("b")}",name="{served_name("b")}",version="2"}} 1.0'
        assert info in metrics
        assert served_name("a") not in metrics.split("ximgctx_model_info")[-1]

        # the same folder again: nothing to load, nothing changes
        again = _post(url, "/admin/reload", {"model": "b", "version": "2"}).json()
        assert again["changed"] is False and again["model"]["loaded_at"] == ready["loaded_at"]
        # an empty body reloads the configured model (A): the exact outputs of A again
        back = _post(url, "/admin/reload", None)
        assert back.status_code == 200 and back.json()["model"]["name"] == served_name("a")
        assert _served_scores(_post(url, "/v1/predict", {"input": TEXTS})) == _expected_scores("a")


@pytest.fixture(scope="module")
def failed_server():
    app = create_app(model_root() / "a", config=_config(), device="cpu")
    with running(app) as url:
        yield url


def _swaps(url: str, outcome: str) -> float:
    for line in _get(url, "/metrics").text.splitlines():
        if line.startswith(f'ximgctx_model_swaps_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"model": "corrupt"}, 422, "model_not_loaded", "does not match manifest"),
        (
            {"model": "b", "expected_sha256": "0" * 64},
            422,
            "model_not_loaded",
            "not the artifact that was pinned",
        ),
        ({"model": "other-tasks"}, 422, "model_not_loaded", "tasks differ"),
        ({"model": "../"}, 400, "model_not_allowed", "not a model folder under"),
        ({"model": "/etc"}, 400, "model_not_allowed", "not a model folder under"),
        ({"model": "nowhere"}, 400, "model_not_allowed", "not a model folder under"),
        ({"model": "b", "command": "rm"}, 400, "invalid_request", "command"),
    ],
)
def test_a_failed_reload_leaves_a_served_and_says_why(failed_server, body, status, code, words):
    url = failed_server
    counted = {"model_not_loaded": "failed", "model_not_allowed": "refused"}.get(code)
    before = _swaps(url, counted) if counted else 0.0
    resp = _post(url, "/admin/reload", body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and words in err["message"].lower(), err
    assert str(model_root()) not in resp.text and "Traceback" not in resp.text  # no server path leaks
    assert _get(url, "/readyz").json()["model"] == served_name("a")
    answer = _post(url, "/v1/predict", {"input": TEXTS})
    assert answer.status_code == 200 and answer.json()["model"] == served_name("a")
    assert _close(_served_scores(answer), _expected_scores("a"))
    if counted:
        assert _swaps(url, counted) == before + 1
    assert _swaps(url, "ok") == 0.0


def test_no_model_root_refuses_a_named_folder():
    app = create_app(model_root() / "a", config=ServeConfig(api_keys=[f"{ADMIN} admin"]), device="cpu")
    with running(app) as url:
        resp = _post(url, "/admin/reload", {"model": str(model_root() / "b")})
        assert resp.status_code == 400 and "--model-root" in resp.json()["error"]["message"]
        assert _get(url, "/readyz").json()["model"] == served_name("a")


def test_requests_that_started_on_a_finish_on_a_and_a_is_released_after_them():
    """A request running on A (held inside its batch) and one queued behind it are answered by A although the
    swap to B completes meanwhile; the next request is B's; A is released when its last request is done."""
    app = create_app(model_root() / "a", config=ServeConfig(no_auth=True, max_wait_ms=0), device="cpu")
    service = app.state.service
    a_only = Moderator(Predictor.from_pretrained(model_root() / "a", device="cpu"))
    b_only = Moderator(Predictor.from_pretrained(model_root() / "b", device="cpu"))

    async def scenario() -> None:
        await service.start()
        try:
            bundle_a = service.model
            entered, gate = threading.Event(), threading.Event()
            original = {"moderate": bundle_a.moderator.moderate}

            def held(posts):  # the first batch on A waits for the test's signal
                entered.set()
                assert gate.wait(60)
                return original["moderate"](posts)

            bundle_a.moderator.moderate = held
            weights = weakref.ref(bundle_a.predictor.model)
            first = asyncio.create_task(service.moderate(ModerationRequest(input=TEXTS[0])))
            assert await asyncio.to_thread(entered.wait, 60)
            swap = asyncio.create_task(service.swap(ModelSource(model_root() / "b", version="b")))
            second = asyncio.create_task(service.moderate(ModerationRequest(input=TEXTS[1])))
            await asyncio.sleep(0.05)
            assert bundle_a.in_flight == 2 and service.model is bundle_a  # B cannot be installed mid-batch
            gate.set()
            new = await swap
            r1, r2 = await first, await second
            assert service.model is new and new.version == "b"
            r3 = await service.moderate(ModerationRequest(input=TEXTS[1]))
            assert [r["model"] for r in (r1, r2, r3)] == [served_name("a")] * 2 + [served_name("b")]
            assert bundle_a.in_flight == 0 and bundle_a.released and bundle_a.predictor is None
            original.clear()  # the test's own reference to A
            gc.collect()
            assert weights() is None  # nothing in the server holds A's weights any more: they were freed
            assert service.previous is not None and service.previous["name"] == served_name("a")
            cases = ((r1, a_only, TEXTS[0]), (r2, a_only, TEXTS[1]), (r3, b_only, TEXTS[1]))
            for resp, moderator, text in cases:
                (want,) = moderator.moderate([Post(id="x", text=text)])
                got = resp["results"][0]["ximgctx"]["category_scores"]
                assert got == pytest.approx({k: float(v) for k, v in want.category_scores.items()}, abs=1e-6)
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_a_model_source_is_followed_and_a_failing_one_keeps_the_model():
    """The poll asks the source which version should be served: a change is swapped in (B), a source that
    fails to load is refused once and the served model stays, and going back to A gives A's exact outputs."""
    wanted: list[tuple[str, object, str] | None] = [None]
    app = create_app(
        model_root() / "a",
        config=ServeConfig(no_auth=True, state_poll_s=0.1),
        device="cpu",
        version="1",
        model_source=lambda: wanted[0],
    )
    service = app.state.service
    post = [Post(id="0", text=TEXTS[2])]

    async def served_version(want: str) -> str:
        for _ in range(600):
            if service.model.version == want:
                return want
            await asyncio.sleep(0.05)
        return service.model.version

    async def scenario() -> None:
        await service.start()
        try:
            _, (first,) = await service.score(post)
            wanted[0] = ("2", model_root() / "b", digest("b"))
            assert await served_version("2") == "2"
            served, (on_b,) = await service.score(post)
            assert served.name == served_name("b")
            wanted[0] = ("3", model_root() / "other-tasks", digest("other-tasks"))
            await asyncio.sleep(1.0)  # several polls: one failure, no retry loop, B still served
            assert service.model.version == "2"
            assert service.metrics.swaps.labels("failed")._value.get() == 1
            wanted[0] = ("1", model_root() / "a", digest("a"))
            assert await served_version("1") == "1"
            wanted[0] = ("3", model_root() / "other-tasks", digest("other-tasks"))  # named again: tried again
            for _ in range(600):
                if service.metrics.swaps.labels("failed")._value.get() == 2:
                    break
                await asyncio.sleep(0.05)
            assert service.metrics.swaps.labels("failed")._value.get() == 2 and service.model.version == "1"
            wanted[0] = ("1", model_root() / "a", digest("a"))
            served, (again,) = await service.score(post)
            assert served.name == served_name("a")
            assert again.tasks["intent"].scores == first.tasks["intent"].scores  # A's exact outputs
            assert on_b.tasks["intent"].scores != first.tasks["intent"].scores
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_search_stays_on_the_index_model_after_a_swap(tmp_path):
    """An index holds A's embeddings: after a swap to B, text queries are still embedded by A (the same
    hits), search reports A, and /v1/models lists B for moderation and A for search."""
    from ximgctx.inference import SearchIndex

    from .._inference_fixtures import make_posts

    predictor = Predictor.from_pretrained(model_root() / "a", device="cpu")
    SearchIndex.build(predictor, make_posts(12, seed=5, folder="swap-search")).save(tmp_path / "index")
    app = create_app(model_root() / "a", config=_config(), device="cpu", index=tmp_path / "index")
    with running(app) as url:
        query = {"text": "a blue square", "k": 4}
        before = _post(url, "/v1/search", query).json()
        assert "data" in before, before
        assert _post(url, "/admin/reload", {"model": "b"}).status_code == 200
        after = _post(url, "/v1/search", query).json()
        assert after["model"] == before["model"] == served_name("a")
        assert [h["id"] for h in after["data"]] == [h["id"] for h in before["data"]]
        assert [h["score"] for h in after["data"]] == pytest.approx([h["score"] for h in before["data"]])
        listed = {m["id"]: m["serves"] for m in _get(url, "/v1/models").json()["data"]}
        assert listed == {served_name("b"): ["moderations", "predict"], served_name("a"): ["search"]}
        assert _get(url, "/readyz").json()["search_model"]["name"] == served_name("a")
        assert _post(url, "/v1/predict", {"input": TEXTS}).json()["model"] == served_name("b")


def test_the_label_memory_is_rebuilt_with_the_new_model(tmp_path, monkeypatch):
    """The store's effective labels are re-embedded by the swapped-in model C (embeddings belong to a
    model), centred on the centre the store holds for C; the files' memory, built by A, is not served with
    C; A's bundle kept its own memory until it was released."""
    import numpy as np

    from ximgctx.inference.memory import LabelMemory
    from ximgctx.queue.loop import LoopState

    from .._inference_fixtures import make_posts
    from .._queue_fixtures import make_store

    monkeypatch.setenv("XIMGCTX_GOVERNANCE_KEY", "hot-swap-governance-key-0123456789")
    reference = make_posts(32, seed=31, folder="swap-reference", with_labels=False)
    a = Predictor.from_pretrained(model_root() / "a", device="cpu")
    c = Predictor.from_pretrained(model_root() / "c", device="cpu")
    LabelMemory.for_predictor(a, reference=reference).save(tmp_path / "memory")
    store = make_store(str(tmp_path / "loop.sqlite"))
    LoopState(store).store_memory_center(digest("c"), c.embed(reference).mean(0).tolist())
    target = make_posts(3, seed=32, folder="swap-target", with_labels=False)[0]
    target.meta = {"visibility": "public", "author": "u1"}
    target.labels = {"intent": ["threat"], "meaning": "literal"}
    config = ServeConfig(no_auth=True, model_root=str(model_root()), state_poll_s=0.2)
    app = create_app(model_root() / "a", config=config, device="cpu", state=store, memory=tmp_path / "memory")
    service = app.state.service

    async def scenario() -> None:
        await service.start()
        try:
            await service.run(service._add_feedback, target, "rita", "")
            bundle_a = service.model
            memory_a = bundle_a.predictor.memory
            assert len(memory_a) == 1 and memory_a.model_digest == digest("a")
            new = await service.swap(ModelSource(model_root() / "c", version="c"))
            memory_c = new.predictor.memory
            assert new.base_memory is None  # the files' memory holds A's embeddings and centre
            assert len(memory_c) == 1 and memory_c.model_digest == digest("c")
            (entry,) = LoopState(store).effective()[1]
            assert np.allclose(memory_a.embeddings[0], a.embed([entry.post])[0], atol=1e-5)
            assert np.allclose(memory_c.embeddings[0], c.embed([entry.post])[0], atol=1e-5)
            assert not np.allclose(memory_a.embeddings[0], memory_c.embeddings[0], atol=1e-3)
            assert np.allclose(memory_c.center, c.embed(reference).mean(0), atol=1e-5)
            assert bundle_a.released  # nothing was in flight on A
            # feedback goes on with C: the next label is embedded by C
            other = make_posts(3, seed=32, folder="swap-target", with_labels=False)[1]
            other.meta, other.labels = target.meta, {"meaning": "ironic"}
            answer = await service.run(service._add_feedback, other, "rita", "")
            assert answer["memory_size"] == 2 and len(service.model.predictor.memory) == 2
        finally:
            await service.stop()
            store.close()

    asyncio.run(scenario())
