"""The service against its real clients: the official ``openai`` SDK and plain HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types import Moderation, ModerationCreateResponse

from ximgctx.errors import ConfigError
from ximgctx.inference.openai_format import OPENAI_CATEGORIES
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import model_dir
from .._serve_fixtures import API_KEY, png_data_url, running

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def server():
    app = create_app(model_dir(), config=ServeConfig(api_keys=[API_KEY], max_body_bytes=256 << 10))
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(api_key=API_KEY, base_url=f"{server}/v1", max_retries=0, timeout=60)


def _check_every_category(result: Moderation) -> None:
    assert isinstance(result, Moderation)
    cats = result.categories.model_dump(by_alias=True)
    scores = result.category_scores.model_dump(by_alias=True)
    applied = result.category_applied_input_types.model_dump(by_alias=True)
    assert set(cats) == set(scores) == set(applied) == set(OPENAI_CATEGORIES) and len(OPENAI_CATEGORIES) == 13
    for name in OPENAI_CATEGORIES:
        assert isinstance(cats[name], bool), name
        assert isinstance(scores[name], float) and 0.0 <= scores[name] <= 1.0, name
        assert isinstance(applied[name], list) and set(applied[name]) <= set(OPENAI_CATEGORIES[name]), name
    assert result.decision in ("allow", "review", "block")  # ximgctx's extra field, kept by the SDK


def test_official_client_parses_a_string_a_list_and_multimodal_parts(client):
    one = client.moderations.create(input="see you all saturday", model="ximgctx")
    assert isinstance(one, ModerationCreateResponse) and len(one.results) == 1 and one.id.startswith("modr-")
    _check_every_category(one.results[0])
    many = client.moderations.create(input=["first post", "second post", "third"])
    assert len(many.results) == 3
    for r in many.results:
        _check_every_category(r)
    parts = client.moderations.create(
        input=[
            {"type": "text", "text": "never again"},
            {"type": "image_url", "image_url": {"url": png_data_url()}},
        ],
        extra_body={"ximgctx": {"id": "p1", "replies": ["stay safe out there", {"text": "lol"}]}},
    )
    (r,) = parts.results
    _check_every_category(r)
    assert r.model_extra["ximgctx"]["id"] == "p1"
    # the default policy's threat category answers violence (text and image) and harassment/threatening
    assert r.category_applied_input_types.violence == ["text", "image"]
    assert r.category_applied_input_types.harassment_threatening == ["text"]
    assert r.category_scores.violence == pytest.approx(r.model_extra["ximgctx"]["category_scores"]["threat"])
    assert r.category_scores.sexual == 0.0 and "sexual" in r.model_extra["ximgctx"]["unscored"]
    assert r.category_applied_input_types.sexual == []


def test_a_text_only_post_reports_text_only(client):
    r = client.moderations.create(input="only words here").results[0]
    assert r.category_applied_input_types.violence == ["text"]


def test_no_key_wrong_key_is_401(server):
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": API_KEY}):
        resp = httpx.post(f"{server}/v1/moderations", json={"input": "x"}, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(api_key="wrong-key-0123456789", base_url=f"{server}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.moderations.create(input="x")


@pytest.mark.parametrize(
    "url",
    ["/etc/passwd", "file:///etc/passwd", "http://example.com/a.png", "https://127.0.0.1/x.png", "ftp://h/x"],
)
def test_paths_file_urls_and_unlisted_hosts_are_refused(server, url):
    body = {"input": [{"type": "image_url", "image_url": {"url": url}}]}
    resp = httpx.post(f"{server}/v1/moderations", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and "data: URL" in err["message"]
    assert "Traceback" not in resp.text


def test_malformed_requests_are_clear_4xx(server):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    cases = [
        (b"{not json", 400),
        (b'{"input": 5}', 400),
        (b'{"input": []}', 400),
        (b'{"input": [{"type": "video", "url": "x"}]}', 400),
        (b'{"input": "x", "ximgctx": {"replies": "not a list"}}', 400),
        (b'{"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}', 400),
        (b'{"input": "' + b"x" * (300 << 10) + b'"}', 413),
    ]
    for body, status in cases:
        resp = httpx.post(
            f"{server}/v1/moderations", content=body, headers={**auth, "Content-Type": "application/json"}
        )
        assert resp.status_code == status, (body[:60], resp.text)
        assert (
            set(resp.json()["error"]) == {"message", "type", "param", "code"}
            and resp.json()["error"]["message"]
        )


def test_an_undecodable_image_gets_a_result_and_review(server):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    broken = "data:image/png;base64," + png_data_url()[len("data:image/png;base64,") :][:40]
    body = {"input": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": broken}}]}
    resp = httpx.post(f"{server}/v1/moderations", json=body, headers=auth)
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert any(p.startswith("image") for p in result["ximgctx"]["problems"])
    assert result["category_applied_input_types"]["violence"] == ["text"]
    assert result["decision"] == "review"  # the default policy reviews a post whose image is unreadable


def test_health_ready_metrics_and_predict(server):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json()["status"] == "ready"
    pred = httpx.post(f"{server}/v1/predict", json={"input": ["a", "b"]}, headers=auth).json()
    assert [sorted(r["tasks"]) for r in pred["results"]] == [["intent", "meaning", "objects"]] * 2
    assert httpx.get(f"{server}/metrics").status_code == 401
    text = httpx.get(f"{server}/metrics", headers=auth).text
    assert 'ximgctx_requests_total{route="/v1/predict",status="200"}' in text
    assert "ximgctx_batch_posts_bucket" in text and "ximgctx_errors_total" in text


def test_refuses_to_start_without_keys_off_loopback():
    with pytest.raises(ConfigError, match="loopback"):
        ServeConfig(host="0.0.0.0", no_auth=True).check_auth()
    with pytest.raises(ConfigError, match="no API keys"):
        ServeConfig(host="0.0.0.0").check_auth()
    with pytest.raises(ConfigError, match="no API keys"):
        create_app(model_dir(), config=ServeConfig(host="10.1.2.3"))
    ServeConfig(host="127.0.0.1", no_auth=True).check_auth()
    ServeConfig(host="0.0.0.0", api_keys=[API_KEY]).check_auth()


def test_policy_init_writes_a_review_only_policy_the_model_accepts(tmp_path):
    from ximgctx.cli import main
    from ximgctx.inference import Moderator, Predictor
    from ximgctx.models.policy import ModerationPolicy

    out = tmp_path / "starter.yaml"
    assert main(["policy", "init", "--model", str(model_dir()), "--out", str(out)]) == 0
    policy = ModerationPolicy.from_yaml(out)
    assert sorted(policy.categories) == [
        "intent.joke", "intent.meme", "intent.protest", "intent.threat",
        "meaning.ironic", "meaning.literal", "meaning.symbolic",
    ]  # fmt: skip
    assert all(r.block is None and r.review == 0.5 for r in policy.categories.values())
    assert policy.categories["intent.threat"].openai == ["violence", "harassment/threatening"]
    assert policy.categories["intent.joke"].openai == []
    results = Moderator(Predictor.from_pretrained(model_dir()), out).moderate([])
    assert results == []
    assert (
        main(["policy", "init", "--model", str(model_dir()), "--out", str(out)]) == 0
    )  # replaced atomically


def test_server_decode_limits_and_no_paths(tmp_path):
    from ximgctx.data.record import Post
    from ximgctx.inference import Predictor

    predictor = Predictor.from_pretrained(model_dir())
    app = create_app(predictor, config=ServeConfig(no_auth=True, max_image_pixels=1000))
    proc = app.state.service.predictor.model.processor
    assert proc.limits.max_pixels == 1000  # the server's limit, not the model's
    secret = tmp_path / "secret.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(secret)
    batch = proc([Post(id="p", image=str(secret))])  # a path never reaches the model's reads
    assert batch.image_mask.tolist() == [False]
    assert [p.kind for p in batch.problems[0]] == ["outside_root"]
    assert str(tmp_path) not in str(batch.problems[0][0])


def test_feedback_changes_the_next_result_for_a_near_duplicate_only(tmp_path):
    import base64
    from pathlib import Path

    from ximgctx.inference import Predictor
    from ximgctx.inference.memory import LabelMemory

    from .._inference_fixtures import make_posts
    from .._queue_fixtures import make_store

    memory = tmp_path / "model.memory"
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    reference = make_posts(48, seed=21, folder="serve-reference", with_labels=False)  # the governed sample
    LabelMemory.for_predictor(predictor, reference=reference).save(memory)  # created empty, centred
    store = make_store(str(tmp_path / "loop.sqlite"))
    app = create_app(predictor, config=ServeConfig(no_auth=True), memory=memory, state=store)
    warm = make_posts(40, seed=7, folder="serve-feedback", with_labels=False)

    def parts(post):
        out = [{"type": "text", "text": post.text}]
        if post.image:
            url = "data:image/png;base64," + base64.b64encode(Path(post.image).read_bytes()).decode()
            out.append({"type": "image_url", "image_url": {"url": url}})
        return out

    target = next(p for p in warm if p.image and p.replies)
    far = next(p for p in warm if p.image and p is not target and p.text != target.text)
    with running(app) as url:
        client = openai.OpenAI(api_key="unused", base_url=f"{url}/v1", max_retries=0)
        client.moderations.create(input=[p.text for p in warm[:32]])  # requests never centre the memory

        def violence(post, text_suffix=""):
            body = parts(post)
            body[0]["text"] += text_suffix
            r = client.moderations.create(
                input=body, extra_body={"ximgctx": {"replies": [x.text for x in post.replies]}}
            )
            return r.results[0].category_scores.violence

        near_before, far_before = violence(target, "!"), violence(far)
        image = parts(target)[1]["image_url"]["url"]
        resp = httpx.post(
            f"{url}/v1/feedback",
            json={
                "post": {
                    "id": target.id,
                    "text": target.text,
                    "image": image,
                    "replies": [x.text for x in target.replies],
                    "meta": {"visibility": "public", "author": "u1"},
                },
                "labels": {"intent": ["threat"], "meaning": "literal"},
            },
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["memory_size"] == 1 and resp.json()["reviewer"] == "local"
        near_after, far_after = violence(target, "!"), violence(far)
        private = httpx.post(
            f"{url}/v1/feedback",
            json={
                "post": {"id": "dm1", "text": "hi", "meta": {"visibility": "private"}},
                "labels": {"intent": ["threat"]},
            },
        )
    assert near_after > near_before + 0.05  # the label took effect at once, for the near-duplicate
    assert far_after == far_before  # and not for a far post
    assert private.status_code == 422 and private.json()["error"]["code"] == "not_governed"
    assert "non_public" in private.json()["error"]["message"]
    from ximgctx.queue.loop import LoopState

    (row,) = LoopState(store).history()["rows"]  # the store holds the row: who, the post, its labels
    assert (row["post_id"], row["who"], row["role"]) == (target.id, "local", "reviewer")
    assert row["labels"] == {"intent": ["threat"], "meaning": "literal"}
    (entry,) = LoopState(store).effective()[1]
    assert entry.post.image == base64.b64decode(image.split(",", 1)[1])  # the store owns the image


def test_moderate_format_openai_validates_against_the_sdk(tmp_path):
    import json

    from ximgctx import write_posts
    from ximgctx.cli import main

    from .._inference_fixtures import bad_posts, make_posts

    data = tmp_path / "posts.jsonl"
    write_posts(make_posts(12, seed=3) + bad_posts(), data)
    out = tmp_path / "openai.jsonl"
    argv = [
        "moderate",
        "--model",
        str(model_dir()),
        "--data",
        str(data),
        "--out",
        str(out),
        "--output-format",
        "openai",
    ]
    assert main([*argv, "--no-progress"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 12 + len(bad_posts())
    for line in lines:
        record = json.loads(line)
        moderation = Moderation.model_validate(record)  # strict pydantic validation, not lenient construct
        _check_every_category(moderation)
        assert record["id"] and record["ximgctx"]["id"] == record["id"]
    assert main([*argv[:-2], "--output-format", "openai", "--out", str(tmp_path / "x.parquet")]) == 2
