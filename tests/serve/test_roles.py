"""API keys with scopes: who may moderate, search, review and administer, and what the store records."""

from __future__ import annotations

import httpx
import pytest

from ximgctx.errors import ConfigError
from ximgctx.serve import ServeConfig, create_app
from ximgctx.serve.config import ApiKey, parse_api_key, read_api_keys

from .._inference_fixtures import model_dir
from .._serve_fixtures import running

pytestmark = pytest.mark.usefixtures("one_thread")

MODERATOR = "moderator-key-0123456789"
REVIEWER = "reviewer-key-0123456789a"
ADMIN = "admin-key-0123456789abcd"


def test_key_lines_name_scopes_and_a_name_and_a_plain_key_keeps_its_meaning(tmp_path, monkeypatch):
    plain = parse_api_key(MODERATOR)
    assert plain.scopes == {"moderate", "search"} and plain.name == ""
    assert plain.identity.startswith("key:") and MODERATOR not in plain.identity and len(plain.identity) == 20
    assert plain.identity == ApiKey(MODERATOR).identity  # stable across processes (replicas agree)
    alice = parse_api_key(f"{REVIEWER} review,moderate name=alice")
    assert alice.scopes == {"review", "moderate"} and alice.identity == "alice"
    for bad, words in [
        (f"{REVIEWER} reviw", "unknown scope"),
        (f"{REVIEWER} review name=", "name="),
        (f"{REVIEWER} review admin", "expected KEY"),
        ("short review", "at least 16"),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            parse_api_key(bad, "keys.txt:3")
        assert "keys.txt:3" in str(e.value) and REVIEWER not in str(e.value)  # names the line, not the key
    f = tmp_path / "keys.txt"
    f.write_text(f"# operators\n{MODERATOR}\n{ADMIN} admin,review name=ops\n", encoding="utf-8")
    monkeypatch.delenv("XIMGCTX_API_KEYS", raising=False)
    config = ServeConfig(api_keys=read_api_keys(f))
    assert [(k.identity, sorted(k.scopes)) for k in config.parsed_keys()] == [
        (plain.identity, ["moderate", "search"]),
        ("ops", ["admin", "review"]),
    ]
    f.write_text(f"{ADMIN} superuser\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown scope"):
        read_api_keys(f)


@pytest.fixture(scope="module")
def server():
    keys = [MODERATOR, f"{REVIEWER} review name=rita", f"{ADMIN} admin"]
    app = create_app(model_dir(), config=ServeConfig(api_keys=keys))
    with running(app) as url:
        yield url


def _post(url: str, path: str, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


FEEDBACK = {
    "post": {"id": "p1", "text": "see you saturday", "meta": {"visibility": "public", "author": "u1"}},
    "labels": {"meaning": "literal"},
}


def test_each_route_needs_its_scope(server):
    denied = _post(server, "/v1/feedback", MODERATOR, FEEDBACK)
    assert denied.status_code == 403, denied.text
    err = denied.json()["error"]
    assert err["code"] == "missing_scope" and err["param"] == "review" and err["type"] == "permission_error"
    assert "'review'" in err["message"] and "POST /v1/feedback" in err["message"]
    assert _post(server, "/v1/moderations", MODERATOR, {"input": "x"}).status_code == 200
    # a reviewer-only key may review but not moderate; an admin key may not review
    assert _post(server, "/v1/moderations", REVIEWER, {"input": "x"}).json()["error"]["param"] == "moderate"
    assert _post(server, "/v1/feedback", ADMIN, FEEDBACK).json()["error"]["param"] == "review"
    gone = httpx.delete(f"{server}/v1/feedback/1", headers={"Authorization": f"Bearer {REVIEWER}"})
    assert gone.status_code == 403 and gone.json()["error"]["param"] == "admin"


def test_the_caller_cannot_name_the_reviewer(server):
    resp = _post(server, "/v1/feedback", REVIEWER, {**FEEDBACK, "reviewer": "someone-else"})
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert message.startswith("reviewer:") and "rita" in message  # the key's identity is what counts
