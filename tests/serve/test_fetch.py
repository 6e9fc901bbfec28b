"""Image URLs: fetched off the event loop under one deadline, counted before any fetch, public addresses only
(unless the operator allows a network), allowlist entries with ports, one answer for every failure."""

from __future__ import annotations

import asyncio
import base64
import io
import statistics
import threading
import time

import httpx
import pytest
from PIL import Image

from ximgctx.errors import ConfigError, InputError
from ximgctx.serve import ServeConfig, create_app
from ximgctx.serve.fetch import FETCH_FAILED, ImageFetcher, address_refused, parse_allowed_host

from .._inference_fixtures import model_dir
from .._serve_fixtures import API_KEY, running
from ._image_host import ImageHost

pytestmark = pytest.mark.usefixtures("one_thread")
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _png(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _image_body(url: str) -> dict:
    return {"input": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]}


@pytest.fixture(scope="module")
def host():
    with ImageHost(_png()) as h:
        yield h


@pytest.fixture(scope="module")
def server(host):
    config = ServeConfig(
        api_keys=[API_KEY],
        allow_url_hosts=[f"127.0.0.1:{host.port}"],
        allow_url_networks=["127.0.0.0/8"],  # the test's host is on loopback: allowed here only
        url_timeout_s=2.0,
    )
    with running(create_app(model_dir(), config=config)) as url:
        yield url


def test_an_allowed_url_is_fetched_and_used(server, host):
    resp = httpx.post(f"{server}/v1/moderations", json=_image_body(host.url("/img.png")), headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["category_applied_input_types"]["violence"] == ["text", "image"]
    assert f"127.0.0.1:{host.port}" in host.hosts


def test_a_slow_host_does_not_hold_up_the_event_loop(server, host):
    """A host sending one byte a second: the fetch runs out its 2 s deadline while /healthz answers."""
    host.connected.clear()
    before = host.connections
    answer: dict = {}

    def post() -> None:
        t0 = time.perf_counter()
        answer["resp"] = httpx.post(
            f"{server}/v1/moderations", json=_image_body(host.url("/slow")), headers=AUTH, timeout=60
        )
        answer["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=post)
    thread.start()
    assert host.connected.wait(30), "the server never connected to the slow host"
    probes = []
    with httpx.Client() as client:
        client.get(f"{server}/healthz")  # a warm connection: the probes time the server, not the handshake
        for _ in range(5):
            t0 = time.perf_counter()
            assert client.get(f"{server}/healthz").status_code == 200
            probes.append(time.perf_counter() - t0)
    still_fetching = thread.is_alive()
    thread.join(60)
    assert still_fetching, "the fetch ended before the probes: they measured nothing"
    assert statistics.median(probes) < 0.1, probes  # old code: /healthz waited for the fetch (18.6 s)
    resp = answer["resp"]
    assert (
        resp.status_code == 400 and resp.json()["error"]["message"] == f"input[1].image_url: {FETCH_FAILED}"
    )
    assert answer["seconds"] < 2.0 + 10  # the deadline bounds the whole fetch (1 byte/s would take 100000 s)
    assert host.connections == before + 1


def test_a_flood_of_image_urls_is_refused_before_any_fetch(server, host):
    before = host.connections
    parts = [{"type": "image_url", "image_url": {"url": host.url(f"/img.png?{i}")}} for i in range(2000)]
    body = {"input": [{"type": "text", "text": "x"}, *parts]}
    resp = httpx.post(f"{server}/v1/moderations", json=body, headers=AUTH, timeout=60)
    assert resp.status_code == 400
    assert "2000 images in one post" in resp.json()["error"]["message"]
    assert host.connections == before  # 0 fetches (old code: 2000 fetches, then the refusal)


def test_records_naming_more_urls_than_the_limit_are_refused_before_any_fetch(host):
    from ximgctx.serve.inputs import posts_from_records

    config = ServeConfig(no_auth=True, allow_url_hosts=[f"127.0.0.1:{host.port}"], max_url_images=2)
    fetcher = ImageFetcher.from_config(config)
    records = [{"id": f"p{i}", "text": "x", "image": host.url("/img.png")} for i in range(3)]
    before = host.connections
    with pytest.raises(InputError, match="3 image URLs in one request, over the server's limit of 2"):
        asyncio.run(posts_from_records(records, config, fetcher))
    assert host.connections == before


def test_the_metrics_count_fetches(server):
    text = httpx.get(f"{server}/metrics", headers=AUTH).text
    assert 'ximgctx_url_fetches_total{outcome="ok"}' in text
    assert 'ximgctx_url_fetches_total{outcome="failed"}' in text


# ------------------------------------------------------------------------------- the fetcher alone
def _fetch(fetcher: ImageFetcher, url: str) -> bytes:
    async def go() -> bytes:
        try:
            return await fetcher.read(url, "image")
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def _failure(fetcher: ImageFetcher, url: str) -> str:
    with pytest.raises(InputError) as e:
        _fetch(fetcher, url)
    return str(e.value)


def test_private_addresses_are_refused_by_default(host):
    before = host.connections
    for name in ("127.0.0.1", "localhost"):
        fetcher = ImageFetcher(allow_hosts=[f"{name}:{host.port}"], timeout_s=2)
        assert _failure(fetcher, host.url("/img.png", name)) == f"image: {FETCH_FAILED}"
    assert host.connections == before  # refused from the resolved address: never connected
    allowed = ImageFetcher(allow_hosts=[f"localhost:{host.port}"], allow_networks=["127.0.0.0/8", "::1"])
    assert _fetch(allowed, host.url("/img.png", "localhost")) == host.png


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_which_addresses_are_refused(address, refused):
    assert address_refused(address) is refused


def test_an_allowed_network_opens_only_itself():
    nets = [__import__("ipaddress").ip_network("10.1.0.0/16")]
    assert not address_refused("10.1.2.3", nets)
    assert address_refused("10.2.0.1", nets) and address_refused("127.0.0.1", nets)


def test_ports_outside_the_allowlist_are_refused(host):
    before = host.connections
    exact = ImageFetcher(allow_hosts=[f"127.0.0.1:{host.port + 1}"], allow_networks=["127.0.0.0/8"])
    bare = ImageFetcher(allow_hosts=["127.0.0.1"], allow_networks=["127.0.0.0/8"])
    for fetcher in (exact, bare):  # a bare host allows ports 80 and 443 only
        msg = _failure(fetcher, host.url("/img.png"))
        assert f"127.0.0.1:{host.port} is not on this server's allowlist" in msg
    assert host.connections == before
    assert bare.check("http://127.0.0.1/x.png", "u")[2] == 80
    assert bare.check("https://127.0.0.1/x.png", "u")[2] == 443
    with pytest.raises(InputError, match="user name or password"):
        bare.check("http://user:pw@127.0.0.1/x.png", "u")


def test_every_fetch_failure_reads_the_same(host):
    """Refused address, connection refused (a closed port), a timeout, HTTP 404: one message, so the answers
    tell nothing about what listens behind the server."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    hosts = [f"127.0.0.1:{host.port}", f"127.0.0.1:{closed}"]
    open_ = ImageFetcher(allow_hosts=hosts, allow_networks=["127.0.0.0/8"], timeout_s=1.5)
    default = ImageFetcher(allow_hosts=hosts, timeout_s=1.5)
    messages = {
        "address refused": _failure(default, host.url("/img.png")),
        "connection refused": _failure(open_, f"http://127.0.0.1:{closed}/img.png"),
        "timeout": _failure(open_, host.url("/slow")),
        "HTTP 404": _failure(open_, host.url("/missing.png")),
        "too large": _failure(
            ImageFetcher(allow_hosts=hosts, allow_networks=["127.0.0.0/8"], max_bytes=100),
            host.url("/img.png"),
        ),
    }
    assert set(messages.values()) == {f"image: {FETCH_FAILED}"}, messages


def test_the_checked_address_is_the_one_connected(host):
    """Resolved once: the connection goes to the address that was checked, with the name as Host (a name
    that no resolver knows could not be fetched if the HTTP client resolved it again)."""
    fetcher = ImageFetcher(allow_hosts=[f"images.example.invalid:{host.port}"], allow_networks=["127.0.0.1"])
    calls = []

    async def resolve(name: str, port: int) -> list[str]:
        calls.append(name)
        return ["127.0.0.1"]

    fetcher.resolve = resolve  # type: ignore[method-assign]
    assert _fetch(fetcher, f"http://images.example.invalid:{host.port}/img.png") == host.png
    assert calls == ["images.example.invalid"]
    assert host.hosts[-1] == f"images.example.invalid:{host.port}"

    async def rebinding(name: str, port: int) -> list[str]:
        return ["127.0.0.1", "10.0.0.1"]  # any refused address refuses the name

    fetcher.resolve = rebinding  # type: ignore[method-assign]
    assert _failure(fetcher, f"http://images.example.invalid:{host.port}/img.png") == f"image: {FETCH_FAILED}"


def test_allowlist_entries_parse_and_bad_ones_are_config_errors():
    assert str(parse_allowed_host("CDN.Example.com")) == "cdn.example.com"
    assert parse_allowed_host("cdn.example.com:8443").port == 8443
    assert parse_allowed_host("[::1]:8080").host == "::1"
    for bad in ("cdn.example.com:0", "cdn.example.com:x", "::1", "a/b", "[::1"):
        with pytest.raises(ConfigError):
            parse_allowed_host(bad)
    with pytest.raises(ConfigError, match="allow_url_networks"):
        ServeConfig(no_auth=True, allow_url_networks=["not-a-network"])
    assert ServeConfig(no_auth=True, allow_url_hosts=["A.example:81"]).allow_url_hosts == ["a.example:81"]


def test_data_urls_need_no_allowlist():
    data = _png()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert _fetch(ImageFetcher(), url) == data
