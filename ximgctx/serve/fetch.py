"""Image URLs of hosts the operator allows, fetched without holding up the server (OWASP's SSRF advice).

A request may name an ``http(s)`` image URL only when the operator listed its host (``--allow-url-host``);
everything else is a ``data:`` URL. A fetch:

* is checked from the URL's text first: scheme http/https, no user name or password, a host and port on the
  allowlist (``host:port``; a bare ``host`` allows the scheme's default port, 80 or 443, only);
* resolves the host once (asynchronously) and refuses it when any address it resolves to is loopback,
  private, link-local, shared, reserved, multicast or unspecified (IPv4 inside IPv6 forms included), unless
  the address is inside a network the operator allows (``--allow-url-network``); then connects to the address
  it checked, never resolving again (no DNS rebinding), with the host name as HTTP ``Host`` and TLS server
  name (certificates are verified against the name);
* runs on the event loop with ``httpx.AsyncClient`` under one deadline for the whole fetch (resolution,
  connection, every read: ``url_timeout_s``), no redirects, no proxies from the environment, no compression
  (``Accept-Encoding: identity``; an encoded answer is refused), and stops reading past ``max_image_bytes``.

Every failure after the URL's text was accepted (an address refused, no answer, a refused connection, an
HTTP status other than 200, too many bytes, the deadline) is the same message, so the answers reveal nothing
about which hosts and ports exist behind the server; the reason goes to the server's log at debug level.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ximgctx._extras import require
from ximgctx.errors import ConfigError, InputError

__all__ = [
    "FETCH_FAILED",
    "AllowedHost",
    "ImageFetcher",
    "address_refused",
    "decode_data_url",
    "is_url",
    "parse_allowed_host",
    "parse_network",
]

logger = logging.getLogger(__name__)

#: The one answer for every fetch that failed after its URL was accepted.
FETCH_FAILED = "the image URL could not be fetched; send the image as a data: URL"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_CONNECTIONS = 64  # fetches in flight at once, whatever the number of requests; the rest wait (deadline)
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class AllowedHost:
    """One allowlist entry: a host name or address, and the one port allowed (None: the default ports)."""

    host: str
    port: int | None = None

    def allows(self, scheme: str, host: str, port: int) -> bool:
        if host != self.host:
            return False
        return port == self.port if self.port is not None else port == _DEFAULT_PORTS[scheme]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_allowed_host(entry: str) -> AllowedHost:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (case and a trailing dot ignored)."""
    text = entry.strip().lower()
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"allow_url_hosts: {entry!r} is not host, host:port or [v6]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ConfigError(f"allow_url_hosts: write an IPv6 address in brackets, [{text}]:port, got {entry!r}")
    else:
        host, port_text = text, None
    host = host.rstrip(".")
    if not host or any(c in host for c in "/@?#\\ "):
        raise ConfigError(f"allow_url_hosts: {entry!r} is not a host name or address")
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"allow_url_hosts: the port of {entry!r} must be 1-65535")
        port = int(port_text)
    return AllowedHost(host, port)


def parse_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network the operator allows fetches into although it is not public (``127.0.0.0/8``,
    ``10.1.2.3``)."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"allow_url_networks: {entry!r} is not an address or network (CIDR)") from None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64), which is where it leads."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refused(address: str, allowed: Iterable[Any] = ()) -> bool:
    """Whether the server may not connect to ``address``: anything but a public unicast address, unless it
    is inside one of the ``allowed`` networks."""
    ip: Any = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_v4(ip)) is not None:
        if any(ip in net for net in allowed if net.version == 6):
            return False
        ip = v4
    if any(ip in net for net in allowed if net.version == ip.version):
        return False
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def is_url(url: str) -> bool:
    """Whether an image reference is a URL the server would fetch (not a ``data:`` URL)."""
    return url[:5].lower() != "data:"


def decode_data_url(url: str, max_bytes: int, where: str) -> bytes:
    """The bytes of a base64 ``data:`` URL, refused past ``max_bytes`` before decoding."""
    m = _DATA_URL.match(url)
    if m is None:
        raise InputError(f"{where}: not a data: URL")
    payload = url[m.end() :]
    if not m.group("b64"):
        raise InputError(f"{where}: data: URLs must be base64 (';base64,')")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InputError(f"{where}: image is over the server's {max_bytes} byte limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: invalid base64 in the data: URL") from None


class _Failed(Exception):
    """A fetch failed after its URL was accepted; the reason is logged, never answered."""

    def __init__(self, detail: str, kind: str = "failed") -> None:
        super().__init__(detail)
        self.kind = kind  # "refused": the address was not allowed; "failed": anything else


class ImageFetcher:
    """The server's image reader: ``data:`` URLs decoded, allowed ``http(s)`` URLs fetched (see the module).

    One per server: it holds the ``httpx.AsyncClient`` (created on first use inside the running loop; close
    it with :meth:`aclose`). ``resolve`` may be replaced (tests point a name at a local address).
    """

    def __init__(
        self,
        *,
        allow_hosts: Iterable[str] = (),
        allow_networks: Iterable[str] = (),
        timeout_s: float = 5.0,
        max_bytes: int = 5 << 20,
        on_fetch: Any = None,
    ) -> None:
        self.allow_hosts = [parse_allowed_host(h) for h in allow_hosts if h.strip()]
        self.allow_networks = [parse_network(n) for n in allow_networks if n.strip()]
        if not timeout_s > 0:
            raise ConfigError(f"url_timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.max_bytes = int(max_bytes)
        self.on_fetch = on_fetch  # called with "ok", "failed" or "refused" (metrics)
        self._client: Any = None

    @classmethod
    def from_config(cls, config: Any, on_fetch: Any = None) -> ImageFetcher:
        return cls(
            allow_hosts=config.allow_url_hosts,
            allow_networks=config.allow_url_networks,
            timeout_s=config.url_timeout_s,
            max_bytes=config.max_image_bytes,
            on_fetch=on_fetch,
        )

    # ------------------------------------------------------------------------------------ URL text
    def check(self, url: str, where: str) -> tuple[str, str, int, str]:
        """``(scheme, host, port, path and query)`` of a URL the allowlist accepts; errors name the URL's
        problem (it is the caller's own text: no network was touched)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InputError(f"{where}: not a valid URL") from None
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
        if scheme not in _DEFAULT_PORTS or not host:
            raise InputError(
                f"{where}: only data: URLs (and http(s) URLs of allowed hosts) are read; got a "
                f"{scheme or 'path'!r} URL"
            )
        if parts.username is not None or parts.password is not None:
            raise InputError(f"{where}: image URLs may not carry a user name or password")
        port = port if port is not None else _DEFAULT_PORTS[scheme]
        if not any(a.allows(scheme, host, port) for a in self.allow_hosts):
            raise InputError(
                f"{where}: {host}:{port} is not on this server's allowlist; send the image as a data: URL"
            )
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return scheme, host, port, target

    # ------------------------------------------------------------------------------------ reading
    async def read(self, url: str, where: str) -> bytes:
        """The bytes of an image reference: a ``data:`` URL, or an allowed URL fetched."""
        if not is_url(url):
            return decode_data_url(url, self.max_bytes, where)
        return await self.fetch(url, where)

    async def fetch(self, url: str, where: str) -> bytes:
        """An allowed URL's bytes, within the deadline and the size limit, or the one failure message."""
        scheme, host, port, target = self.check(url, where)
        try:
            # one deadline for the whole fetch (asyncio.timeout is Python 3.11+; wait_for cancels alike)
            data = await asyncio.wait_for(self._fetch(scheme, host, port, target), self.timeout_s)
        except (_Failed, asyncio.TimeoutError, TimeoutError, OSError) as e:
            self._count(e.kind if isinstance(e, _Failed) else "failed")
            logger.debug("image fetch %s:%d failed: %s", host, port, e or type(e).__name__)
            raise InputError(f"{where}: {FETCH_FAILED}") from None
        except Exception as e:  # noqa: BLE001 - any httpx/TLS error is the same answer
            self._count("failed")
            logger.debug("image fetch %s:%d failed: %s", host, port, type(e).__name__)
            raise InputError(f"{where}: {FETCH_FAILED}") from None
        self._count("ok")
        return data

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` (one asynchronous lookup)."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def _fetch(self, scheme: str, host: str, port: int, target: str) -> bytes:
        try:
            addresses = await self.resolve(host, port)
        except (OSError, UnicodeError) as e:
            raise _Failed(f"no address ({e})") from None
        if not addresses:
            raise _Failed("no address")
        refused = [a for a in addresses if address_refused(a, self.allow_networks)]
        if refused:
            raise _Failed(f"{refused[0]} is not a public address", kind="refused")
        address = addresses[0]
        literal = f"[{address}]" if ":" in address else address
        name = f"[{host}]" if ":" in host else host
        host_header = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        client = self._http()
        request = client.build_request(
            "GET",
            f"{scheme}://{literal}:{port}{target}",
            headers={"Host": host_header, "Accept-Encoding": "identity", "Accept": "image/*"},
            extensions=extensions,
        )
        resp = await client.send(request, stream=True)
        try:
            if resp.status_code != 200:
                raise _Failed(f"HTTP {resp.status_code}")
            if resp.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
                raise _Failed("encoded answer")
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise _Failed(f"declared {declared} bytes")
            data = bytearray()
            async for chunk in resp.aiter_raw():
                data += chunk
                if len(data) > self.max_bytes:
                    raise _Failed(f"over {self.max_bytes} bytes")
            return bytes(data)
        finally:
            await resp.aclose()

    def _http(self) -> Any:
        if self._client is None:
            httpx = require("httpx", feature="reading image URLs of allowed hosts")
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),  # each step; the deadline bounds the whole
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the checked address is the one reached
                limits=httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=0),
            )
        return self._client

    def _count(self, outcome: str) -> None:
        if self.on_fetch is not None:
            self.on_fetch(outcome)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
