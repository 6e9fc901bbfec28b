"""Every error of the service is OpenAI's error JSON, with ``param`` naming the field; the served model's
name and the aliases; per-input results; ``flag_on``; the limits in ``serve --help``."""

from __future__ import annotations

import contextlib
import io

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from ximgctx import Post
from ximgctx.cli import main as cli_main
from ximgctx.inference.moderation import Moderator
from ximgctx.inference.predictor import Predictor
from ximgctx.models.policy import ModerationPolicy, PolicyError, default_policy_path
from ximgctx.serve import ServeConfig, create_app
from ximgctx.serve.errors import install_error_handlers, param_of
from ximgctx.serve.models import OPENAI_ALIASES, check_model, served_model_name

from .._inference_fixtures import model_dir, tiny_model
from .._serve_fixtures import API_KEY, running

pytestmark = pytest.mark.usefixtures("one_thread")

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def server():
    app = create_app(
        model_dir(), config=ServeConfig(api_keys=[API_KEY], max_body_bytes=64 << 10, max_inputs=4)
    )
    with running(app) as url:
        yield url


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in resp.text and "/work/" not in resp.text
    return body["error"]


def test_unknown_paths_and_wrong_methods_are_openai_errors(server):
    err = _error(httpx.post(f"{server}/v1/nothing", json={}, headers=AUTH), 404)
    assert err["message"] == "Invalid URL (POST /v1/nothing)" and err["code"] == "unknown_url"
    assert err["type"] == "invalid_request_error"
    err = _error(httpx.get(f"{server}/nothing"), 404)
    assert err["message"] == "Invalid URL (GET /nothing)"
    resp = httpx.get(f"{server}/v1/moderations", headers=AUTH)
    err = _error(resp, 405)
    assert (
        err["code"] == "method_not_allowed" and "POST" in err["message"] and resp.headers["allow"] == "POST"
    )
    for path in ("/moderations", "/predict", "/api/v1/moderations"):  # a base URL without /v1: never a 404
        err = _error(httpx.post(f"{server}{path}", json={"input": "x"}, headers=AUTH), 400)
        assert err["code"] == "wrong_base_url" and f"base URL to {server}/v1" in err["message"], path


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": ["a", 5]}, "input[1]"),
        ({"input": "x", "ximgctx": {"replies": "not a list"}}, "ximgctx.replies"),
        ({"input": "x", "ximgctx": {"colour": "red"}}, "ximgctx.colour"),
        ({}, "input"),
        ({"input": ["a", "b", "c", "d", "e"]}, "input"),  # over max_inputs (4)
        (
            {"input": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]},
            "input[0].image_url",
        ),
        ({"input": "x", "model": "gpt-4o"}, "model"),
    ],
)
def test_bad_requests_name_the_field_in_param(server, body, param):
    err = _error(httpx.post(f"{server}/v1/moderations", json=body, headers=AUTH), 400)
    assert err["param"] == param, err
    assert err["message"].startswith(param) or param == "model" or param in err["message"], err


def test_413_and_401_are_openai_errors(server):
    err = _error(httpx.post(f"{server}/v1/moderations", json={"input": "x" * (80 << 10)}, headers=AUTH), 413)
    assert err["code"] == "body_too_large"
    assert (
        _error(httpx.post(f"{server}/v1/moderations", json={"input": "x"}), 401)["code"] == "invalid_api_key"
    )


def test_per_input_results_and_model_name_on_predict_and_moderations(server):
    served = httpx.get(f"{server}/readyz").json()["model"]
    digest = Predictor.from_pretrained(model_dir(), device="cpu").model_digest
    assert served == f"ximgctx@{digest[:12]}"  # the artifact's digest, not the folder's name
    body = {"input": ["fine", "x" * 40_000, "also fine"], "model": "text-moderation-stable"}
    mod = httpx.post(f"{server}/v1/moderations", json=body, headers=AUTH).json()
    assert mod["model"] == served and len(mod["results"]) == 3
    assert [("error" in r) for r in mod["results"]] == [False, True, False]
    err = mod["results"][1]["error"]
    assert err["param"] == "input[1]" and err["code"] == "input_too_large" and "32000" in err["message"]
    assert mod["results"][1]["decision"] == "review" and mod["results"][1]["flagged"] is False
    pred = httpx.post(f"{server}/v1/predict", json=body, headers=AUTH).json()
    assert pred["model"] == served
    assert [sorted(r) for r in pred["results"]][1] == ["error", "id"]
    assert pred["results"][1]["error"]["param"] == "input[1]" and "tasks" in pred["results"][0]
    one = httpx.post(f"{server}/v1/moderations", json={"input": "a\x00b"}, headers=AUTH).json()["results"][0]
    assert (
        one["error"]["param"] == "input" and one["decision"] == "review"
    )  # a single input: its own result too


def test_the_handlers_answer_429_500_and_route_errors_as_openai_json():
    app = FastAPI()
    kinds: list[str] = []
    install_error_handlers(app, kinds.append, lambda: {"/v1/moderations"})

    @app.get("/busy")
    async def busy():
        raise HTTPException(429, "slow down", headers={"Retry-After": "3"})

    @app.get("/bug")
    async def bug():
        raise RuntimeError("secret /srv/path")

    client = TestClient(app, raise_server_exceptions=False)
    resp = client.get("/busy")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    assert resp.json() == {
        "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    resp = client.get("/bug")
    assert resp.status_code == 500 and "secret" not in resp.text
    assert resp.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    assert kinds == ["internal"]


def test_param_of_reads_the_field_a_message_names():
    assert param_of("input[2]: contains a NUL character") == "input[2]"
    assert param_of("ximgctx[0].replies[3]: 40001 characters") == "ximgctx[0].replies[3]"
    assert param_of("labels.intent: not a label") == "labels.intent"
    assert param_of("give exactly one of text, image or post_id") is None
    assert param_of("the server is busy (queue full): retry") is None


def test_served_model_name_and_aliases():
    predictor = Predictor(tiny_model(0), device="cpu")
    assert served_model_name(predictor) == "ximgctx"  # no artifact: no digest
    predictor.model_digest = "ab" * 32
    assert served_model_name(predictor) == "ximgctx@abababababab"
    predictor.model.card_metadata = {"model_name": "acme-moderator"}
    assert served_model_name(predictor) == "acme-moderator@abababababab"
    assert served_model_name(predictor, "ops-name") == "ops-name@abababababab"
    predictor.model.card_metadata = {}
    assert served_model_name(predictor, source="acme/moderator") == "acme/moderator@abababababab"
    for name in (*OPENAI_ALIASES, None, "ximgctx", "acme@abababababab", "acme"):
        check_model(name, "acme@abababababab")
    with pytest.raises(Exception, match="not served here") as e:
        check_model("omni-moderation-2099-01-01", "acme@abababababab")
    assert e.value.param == "model" and e.value.status == 400


def test_flag_on_review_flags_review_decisions_and_block_stays_the_default():
    data = ModerationPolicy.from_yaml(default_policy_path()).to_dict()
    assert data["flag_on"] == "block"
    data["categories"]["threat"].update(review=0.0, block=None)  # every post: review
    block = ModerationPolicy.from_dict({k: v for k, v in data.items() if k != "flag_on"})
    review = ModerationPolicy.from_dict({**data, "flag_on": "review"})
    assert block.flag_on == "block" and ModerationPolicy.from_dict(review.to_dict()).flag_on == "review"
    assert [block.flags(d) for d in ("allow", "review", "block")] == [False, False, True]
    assert [review.flags(d) for d in ("allow", "review", "block")] == [False, True, True]
    for bad in ("allow", "never", None):
        with pytest.raises(PolicyError, match="flag_on must be one of"):
            ModerationPolicy.from_dict({**data, "flag_on": bad})
    predictor = Predictor(tiny_model(0), device="cpu")
    posts = [Post(id="a", text="see you all saturday"), Post(id="b", text="never again")]
    for policy, flagged in ((block, False), (review, True)):
        results = Moderator(predictor, policy, explain="none").moderate(posts)
        assert [r.decision for r in results] == ["review", "review"]
        assert [r.flagged for r in results] == [flagged, flagged]
        assert [r.categories["threat"] for r in results] == [flagged, flagged]


def test_serve_help_states_the_limits_and_the_openai_names():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli_main(["serve", "--help"])
    text = " ".join(out.getvalue().split())
    defaults = ServeConfig()
    assert f"a list of at most {defaults.max_inputs} strings" in text
    assert f"at most {defaults.max_text_chars} characters per text or reply" in text
    assert "at most one image" in text and f"at most {defaults.max_replies} per post" in text
    assert all(alias in text for alias in OPENAI_ALIASES) and "flag_on" in text and "/v1" in text
