"""Third-party OpenAI moderation clients against the service on 127.0.0.1.

The official ``openai`` SDK, LiteLLM (``litellm.moderation`` and its ``openai_moderation`` guardrail),
LangChain's ``OpenAIModerationMiddleware`` (in an agent with a fake chat model) and openai-guardrails'
``Moderation`` check, each in four cases: the main path (allow / review / block posts), a base URL without
``/v1`` (an OpenAI-style error, and no request leaves 127.0.0.1), ``review`` under ``flag_on: review``,
and one bad input (a NUL character) among good ones.

No request may leave the machine: every test runs under :func:`loopback_only`, which records every address
dialled or looked up and refuses any that is not 127.0.0.1 (so a client's fallback to the public OpenAI
endpoint fails and is seen), and ``OPENAI_BASE_URL`` points at a local trap server that records anything
sent to it. The thresholds of the policy are set between the tiny model's own scores of three texts, so
each text's decision is known: LOW allow, MID review, HIGH block.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from ximgctx import Post
from ximgctx.inference.moderation import Moderator
from ximgctx.inference.predictor import Predictor
from ximgctx.models.policy import ModerationPolicy, default_policy_path
from ximgctx.serve import ServeConfig, create_app
from ximgctx.serve.models import OPENAI_ALIASES

from .._inference_fixtures import model_dir
from .._serve_fixtures import API_KEY, running

pytestmark = pytest.mark.usefixtures("one_thread")

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price list download at import
os.environ.setdefault("LITELLM_TELEMETRY", "False")

LOW, MID, HIGH = "never again", "they will pay for this", "cat photo"
BAD = "see you\x00 saturday"  # a NUL character: this input's own problem


# --------------------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def policies():
    """The default policy with threat's thresholds between the model's scores of LOW < MID < HIGH:
    ``flag_on: block`` (the default) and ``flag_on: review``."""
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    moderator = Moderator(predictor)
    score = {
        t: moderator.moderate([Post(id="x", text=t)])[0].category_scores["threat"] for t in (LOW, MID, HIGH)
    }
    assert score[LOW] + 0.05 < score[MID] and score[MID] + 0.05 < score[HIGH], score
    data = ModerationPolicy.from_yaml(default_policy_path()).to_dict()
    data["categories"]["threat"].update(
        review=(score[LOW] + score[MID]) / 2, block=(score[MID] + score[HIGH]) / 2
    )
    block = ModerationPolicy.from_dict(data)
    review = ModerationPolicy.from_dict({**data, "flag_on": "review"})
    assert block.flag_on == "block" and review.flag_on == "review"
    return block, review


@pytest.fixture(scope="module")
def servers(policies):
    """Two servers of one model: ``flag_on: block`` and ``flag_on: review``."""
    block, review = policies
    config = {"api_keys": [API_KEY]}
    a = create_app(model_dir(), config=ServeConfig(**config), policy=block)
    b = create_app(model_dir(), config=ServeConfig(**config), policy=review)
    with running(a) as url_block, running(b) as url_review:
        yield url_block, url_review


@pytest.fixture(scope="module")
def served_model(servers):
    return httpx.get(f"{servers[0]}/readyz").json()["model"]


class _Trap(BaseHTTPRequestHandler):
    """Records every request and answers 404 in OpenAI's error JSON (a server with no moderation)."""

    seen: list[tuple[str, str, bytes]] = []

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.path, self.rfile.read(n) if n else b""))
        body = json.dumps(
            {"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}}
        )
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = _answer

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def trap():
    """A local stand-in for the public endpoint: ``OPENAI_BASE_URL`` points here, so a client that falls
    back to "the OpenAI endpoint" sends it here, where it is recorded."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Trap.seen
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Dials:
    hosts: list[str]

    def assert_loopback_only(self) -> None:
        assert set(self.hosts) <= {"127.0.0.1"}, self.hosts


@pytest.fixture
def loopback_only(monkeypatch, trap):
    """Refuse (and record) every connection or name lookup that is not 127.0.0.1; the default OpenAI
    endpoint of every client is the trap."""
    trap_url, seen = trap
    seen.clear()
    monkeypatch.setenv("OPENAI_BASE_URL", f"{trap_url}/fallback")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-trap-0123456789")
    dials = Dials([])
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def host_of(address):
        return address[0] if isinstance(address, tuple) else None

    def connect(self, address):
        host = host_of(address)
        if host is not None:
            dials.hosts.append(host)
            if host != "127.0.0.1":
                raise ConnectionRefusedError(f"test guard: no connection to {host}")
        return real_connect(self, address)

    def connect_ex(self, address):
        host = host_of(address)
        if host is not None:
            dials.hosts.append(host)
            if host != "127.0.0.1":
                return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", None):
            dials.hosts.append(str(host))
            raise socket.gaierror(f"test guard: no name lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield dials
    dials.assert_loopback_only()
    assert seen == [], f"a request reached the stand-in for the public endpoint: {seen}"


# ------------------------------------------------------------------------------------------ openai SDK
def _sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=url, max_retries=0, timeout=60)


def test_openai_sdk_main_path_aliases_and_model_name(servers, served_model, loopback_only):
    url = servers[0]
    client = _sdk(f"{url}/v1")
    resp = client.moderations.create(input=[LOW, MID, HIGH], model="omni-moderation-latest")
    assert loopback_only.hosts[-1] == "127.0.0.1"  # the guard is in the clients' path: it saw the dial
    assert resp.model == served_model and "@" in served_model and "model-attention" not in served_model
    assert [r.flagged for r in resp.results] == [False, False, True]  # flag_on: block
    assert [r.decision for r in resp.results] == ["allow", "review", "block"]
    assert [r.categories.violence for r in resp.results] == [False, False, True]
    for alias in (*OPENAI_ALIASES, served_model, served_model.split("@")[0], None):
        kwargs = {} if alias is None else {"model": alias}
        one = client.moderations.create(input=HIGH, **kwargs)
        assert one.model == served_model and one.results[0].flagged is True, alias
    with pytest.raises(openai.BadRequestError) as e:
        client.moderations.create(input=LOW, model="gpt-4o")
    assert e.value.status_code == 400 and e.value.body["param"] == "model"
    assert e.value.body["code"] == "model_not_found" and served_model in e.value.body["message"]


def test_openai_sdk_base_url_without_v1_is_an_openai_error(servers, loopback_only):
    client = _sdk(servers[0])  # http://127.0.0.1:PORT, no /v1
    with pytest.raises(openai.BadRequestError) as e:
        client.moderations.create(input=HIGH)
    body = e.value.body
    assert body["code"] == "wrong_base_url" and body["type"] == "invalid_request_error"
    assert f"{servers[0]}/v1" in body["message"]


def test_openai_sdk_review_under_flag_on_review(servers, loopback_only):
    block, review = (_sdk(f"{u}/v1").moderations.create(input=[LOW, MID, HIGH]) for u in servers)
    assert [r.decision for r in block.results] == [r.decision for r in review.results]
    assert [r.flagged for r in block.results] == [False, False, True]
    assert [r.flagged for r in review.results] == [False, True, True]
    assert [r.categories.violence for r in review.results] == [False, True, True]
    assert review.results[1].categories.harassment_threatening is True


def test_openai_sdk_one_bad_input_gets_its_own_error_result(servers, loopback_only):
    resp = _sdk(f"{servers[0]}/v1").moderations.create(input=[LOW, BAD, HIGH, ""])
    assert len(resp.results) == 4
    low, bad, high, empty = resp.results
    assert (low.decision, high.decision) == ("allow", "block") and high.flagged is True
    assert bad.flagged is False and bad.decision == "review"  # the policy's unreadable_input
    assert bad.model_extra["error"] == {
        "message": "input[1]: contains a NUL character",
        "type": "invalid_request_error",
        "param": "input[1]",
        "code": "invalid_input",
    }
    assert not any(bad.categories.model_dump().values()) and not any(
        bad.category_scores.model_dump().values()
    )
    assert empty.decision == "allow" and empty.model_extra["error"]["code"] == "empty_input"
    assert "error" not in low.model_extra and "error" not in high.model_extra
    # the same bad input under flag_on: review is flagged (a review decision)
    bad_review = _sdk(f"{servers[1]}/v1").moderations.create(input=[BAD, LOW]).results
    assert [r.flagged for r in bad_review] == [True, False]


# ---------------------------------------------------------------------------------------------- LiteLLM
def test_litellm_moderation(servers, served_model, loopback_only):
    import litellm

    url_block, url_review = servers
    call = {"api_key": API_KEY, "model": "omni-moderation-latest"}
    main = litellm.moderation(input=[LOW, MID, HIGH], api_base=f"{url_block}/v1", **call)
    assert main.model == served_model
    assert [r.flagged for r in main.results] == [False, False, True]
    review = litellm.moderation(input=[LOW, MID, HIGH], api_base=f"{url_review}/v1", **call)
    assert [r.flagged for r in review.results] == [False, True, True]
    mixed = litellm.moderation(input=[LOW, BAD, HIGH], api_base=f"{url_block}/v1", **call)
    assert [r.flagged for r in mixed.results] == [False, False, True]
    with pytest.raises(openai.BadRequestError) as e:  # litellm.moderation raises the SDK's error as is
        litellm.moderation(input=HIGH, api_base=url_block, **call)
    assert e.value.body["code"] == "wrong_base_url"


def _litellm_guardrail(api_base: str):
    from litellm.proxy.guardrails.guardrail_hooks.openai import OpenAIModerationGuardrail

    return OpenAIModerationGuardrail(
        guardrail_name="ximgctx", api_key=API_KEY, api_base=api_base, model="omni-moderation-latest"
    )


def _guard(guardrail, text: str):
    """None when the guardrail lets ``text`` through, else the HTTPException it raised."""
    from fastapi import HTTPException

    try:
        asyncio.run(guardrail.apply_guardrail({"texts": [text]}, {}, "request"))
    except HTTPException as e:
        return e
    return None


def test_litellm_openai_moderation_guardrail(servers, loopback_only):
    url_block, url_review = servers
    block, review = _litellm_guardrail(f"{url_block}/v1"), _litellm_guardrail(f"{url_review}/v1")
    assert _guard(block, LOW) is None and _guard(block, MID) is None  # review passes under flag_on: block
    stopped = _guard(block, HIGH)
    assert stopped is not None and stopped.status_code == 400
    assert "violence" in stopped.detail["moderation_result"]["violated_categories"]
    assert _guard(review, MID) is not None and _guard(review, LOW) is None
    assert _guard(block, BAD) is None and _guard(review, BAD) is not None  # bad input: review decision
    with pytest.raises(httpx.HTTPStatusError) as e:  # no /v1: litellm's HTTP client raises on the 400
        _guard(_litellm_guardrail(url_block), HIGH)
    assert e.value.response.status_code == 400
    assert e.value.response.json()["error"]["code"] == "wrong_base_url"


# ---------------------------------------------------------------------------------------------- LangChain
def _agent(url: str, exit_behavior: str = "error"):
    pytest.importorskip("langchain_openai.middleware", reason="LangChain 1.x needs Python 3.11")
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_openai.middleware import OpenAIModerationMiddleware

    model = GenericFakeChatModel(messages=iter([AIMessage(content="the model answered")] * 4))
    middleware = OpenAIModerationMiddleware(
        client=openai.OpenAI(api_key=API_KEY, base_url=url, max_retries=0),
        check_output=False,
        exit_behavior=exit_behavior,
    )
    return create_agent(model=model, tools=[], middleware=[middleware])


def _ask(agent, text: str) -> str:
    from langchain_core.messages import HumanMessage

    return agent.invoke({"messages": [HumanMessage(content=text)]})["messages"][-1].content


def test_langchain_openai_moderation_middleware(servers, loopback_only):
    pytest.importorskip("langchain_openai.middleware", reason="LangChain 1.x needs Python 3.11")
    from langchain_openai.middleware.openai_moderation import OpenAIModerationError

    url_block, url_review = servers
    assert _ask(_agent(f"{url_block}/v1"), LOW) == "the model answered"
    assert _ask(_agent(f"{url_block}/v1"), MID) == "the model answered"  # review is not flagged
    with pytest.raises(OpenAIModerationError) as e:
        _ask(_agent(f"{url_block}/v1"), HIGH)
    assert e.value.result.decision == "block" and e.value.stage == "input"
    ended = _ask(_agent(f"{url_review}/v1", exit_behavior="end"), MID)
    assert ended.startswith("I'm sorry") and "violence" in ended  # flag_on: review holds it
    assert _ask(_agent(f"{url_block}/v1"), BAD) == "the model answered"  # unscored: review, not flagged
    with pytest.raises(OpenAIModerationError) as e:
        _ask(_agent(f"{url_review}/v1"), BAD)
    assert e.value.result.model_extra["error"]["code"] == "invalid_input"
    with pytest.raises(openai.BadRequestError) as wrong:
        _ask(_agent(url_block), HIGH)
    assert wrong.value.body["code"] == "wrong_base_url"


# ------------------------------------------------------------------------------------- openai-guardrails
def _guardrails(url: str, text: str, raise_errors: bool = True):
    pytest.importorskip("guardrails", reason="openai-guardrails needs Python 3.11")
    from guardrails import check_plain_text
    from guardrails.checks.text import moderation as module

    module._get_moderation_client.cache_clear()  # its fallback client reads the environment once

    @dataclass
    class Ctx:
        guardrail_llm: openai.AsyncOpenAI

    bundle = {"version": 1, "guardrails": [{"name": "Moderation", "config": {}}]}
    ctx = Ctx(openai.AsyncOpenAI(api_key=API_KEY, base_url=url, max_retries=0))
    try:
        (result,) = asyncio.run(
            check_plain_text(
                text, bundle, ctx=ctx, suppress_tripwire=True, raise_guardrail_errors=raise_errors
            )
        )
    except Exception as group:  # its checks run in a TaskGroup: the one check's error, as raised
        errors = getattr(group, "exceptions", None)  # an ExceptionGroup (Python 3.11+)
        if not errors:
            raise
        (error,) = errors
        raise error from None
    return result


def test_openai_guardrails_moderation_check(servers, loopback_only):
    url_block, url_review = servers
    assert _guardrails(f"{url_block}/v1", LOW).tripwire_triggered is False
    assert _guardrails(f"{url_block}/v1", MID).tripwire_triggered is False
    high = _guardrails(f"{url_block}/v1", HIGH)
    assert high.tripwire_triggered is True
    assert set(high.info["flagged_categories"]) == {"violence", "harassment/threatening"}
    assert _guardrails(f"{url_review}/v1", MID).tripwire_triggered is True
    # it reads categories, never flagged: an unscored input has none true, so it passes even under review
    assert _guardrails(f"{url_review}/v1", BAD).tripwire_triggered is False
    with pytest.raises(openai.BadRequestError) as e:  # no /v1: an error, not a fallback
        _guardrails(url_block, HIGH)
    assert e.value.body["code"] == "wrong_base_url"
    quiet = _guardrails(url_block, HIGH, raise_errors=False)
    assert quiet.execution_failed is True and quiet.tripwire_triggered is False


def test_openai_guardrails_falls_back_on_a_404_which_is_why_the_server_never_answers_one(servers, trap):
    """The control for the guard above: against a server that answers the moderation path 404 (the trap),
    openai-guardrails sends the text to OPENAI_BASE_URL, its stand-in for the public endpoint."""
    trap_url, seen = trap
    seen.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", f"{trap_url}/fallback")
        mp.setenv("OPENAI_API_KEY", "sk-trap-0123456789")
        with pytest.raises(openai.NotFoundError):
            _guardrails(f"{trap_url}/v1", "a private message")
    assert [(m, p) for m, p, _ in seen] == [("POST", "/v1/moderations"), ("POST", "/fallback/moderations")]
    assert json.loads(seen[1][2])["input"] == "a private message"
    seen.clear()
    for path in ("/moderations", "/api/v1/moderations", "/v2/moderations"):  # never 404 on ximgctx
        resp = httpx.post(
            f"{servers[0]}{path}", json={"input": "x"}, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "wrong_base_url", path
