"""What the server allows: every limit on a request is the server's, never the request's or the model's."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ximgctx.errors import ConfigError
from ximgctx.serve.fetch import parse_allowed_host, parse_network

__all__ = ["SCOPES", "ApiKey", "ServeConfig", "is_loopback", "parse_api_key", "read_api_keys"]

#: What an API key may do: ``moderate`` (/v1/moderations, /v1/predict), ``search`` (/v1/search), ``review``
#: (/v1/feedback: labels that change served answers), ``admin`` (queue operator routes, undoing feedback,
#: POST /admin/reload).
SCOPES = ("moderate", "search", "review", "admin")
#: The scopes of a key line that names none (today's meaning of a plain key: moderation and search).
DEFAULT_SCOPES = frozenset({"moderate", "search"})


@dataclass(frozen=True)
class ApiKey:
    """One operator key: the secret, what it may do, and the name the audit records (never the key)."""

    key: str = field(repr=False)
    scopes: frozenset[str] = DEFAULT_SCOPES
    name: str = ""

    @property
    def identity(self) -> str:
        """Who the key is in the store's rows: its name, or a digest of the key (keys are >= 16 random
        characters, so the digest names the key without revealing it)."""
        if self.name:
            return self.name
        return "key:" + hashlib.sha256(b"ximgctx-api-key\0" + self.key.encode()).hexdigest()[:16]


def parse_api_key(line: str, where: str = "API key") -> ApiKey:
    """One key line: ``KEY [scope,scope,...] [name=NAME]``. A bare ``KEY`` keeps the meaning keys had before
    scopes: ``moderate`` and ``search``. Errors name the line, never the key."""
    parts = line.split()
    if not parts:
        raise ConfigError(f"{where}: empty key line")
    key, scopes, name = parts[0], set(DEFAULT_SCOPES), ""
    named_scopes = False
    for part in parts[1:]:
        if part.startswith("name="):
            name = part[len("name=") :]
            if not name or len(name) > 64 or not all(c.isalnum() or c in "-_.@" for c in name):
                raise ConfigError(f"{where}: name= must be 1-64 letters, digits or -_.@")
        elif not named_scopes:
            given = {s.strip() for s in part.split(",") if s.strip()}
            unknown = sorted(given - set(SCOPES))
            if unknown or not given:
                raise ConfigError(f"{where}: unknown scope(s) {unknown or [part]}; scopes are {list(SCOPES)}")
            scopes, named_scopes = given, True
        else:
            raise ConfigError(f"{where}: expected KEY [scope,scope] [name=NAME], got {len(parts)} fields")
    if len(key) < 16:
        raise ConfigError(f"{where}: API keys must be at least 16 characters")
    return ApiKey(key, frozenset(scopes), name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_keys(path: str | os.PathLike[str] | None = None, env: str = "XIMGCTX_API_KEYS") -> list[str]:
    """API key lines from a file (one per line, ``KEY [scope,scope] [name=NAME]``, ``#`` comments) and/or a
    comma-separated environment variable (keys with the default scopes, or ``KEY scope,scope`` entries)."""
    keys: list[str] = []
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the API key file ({e.strerror or e})") from None
        keys += [
            line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    keys += [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
    short = [k for k in keys if len(k.split()[0]) < 16]
    if short:
        raise ConfigError(f"API keys must be at least 16 characters; {len(short)} key(s) are shorter")
    for i, line in enumerate(keys, start=1):
        parse_api_key(line, f"API key {i}")
    return keys


@dataclass
class ServeConfig:
    """The service's settings and limits (``ximgctx serve --help`` lists the matching flags)."""

    host: str = "127.0.0.1"  # address to bind; anything but loopback requires API keys
    port: int = 8000  # TCP port
    api_keys: list[str] = field(
        default_factory=list, repr=False
    )  # key lines: KEY [scopes] [name=] (never logged)
    no_auth: bool = False  # serve without keys: allowed on a loopback host only
    max_batch_size: int = 16  # posts coalesced into one model batch
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others to join it
    max_queue: int = 256  # posts waiting for the model; beyond it requests get 503 + Retry-After
    max_body_bytes: int = 8 << 20  # request body limit (413 beyond it)
    max_inputs: int = 32  # inputs (posts) per request
    max_text_chars: int = 32_000  # characters of one text field (the model caps further before BPE)
    max_replies: int = 1_000  # replies per post accepted (the model reads its own max_replies of them)
    max_image_bytes: int = 5 << 20  # decoded bytes of one image
    max_image_pixels: int = 40_000_000  # decode limit of this process (a model folder may only lower it)
    # http(s) image hosts allowed, host (ports 80/443) or host:port; none by default: data: URLs only
    allow_url_hosts: list[str] = field(default_factory=list)
    # networks (CIDR) an allowed host may resolve into although they are not public (loopback, private,
    # link-local...); none by default
    allow_url_networks: list[str] = field(default_factory=list)
    url_timeout_s: float = 5.0  # deadline of one image fetch, from name lookup to the last byte
    max_url_images: int = 4  # http(s) image URLs one request may name, counted before any fetch
    max_request_pixels: int = 40_000_000  # pixels of all images of one request, read from their headers
    pixel_rate: int = 10_000_000  # decode budget per API key, pixels per second (0: no per-key budget)
    pixel_burst: int = 80_000_000  # the most pixels a key may spend at once (at least max_request_pixels)
    # images above this many pixels are decoded on a thread of their own, not the model's (0: never)
    large_image_pixels: int = 4_000_000
    explain: str = "flagged"  # moderation explanations: all, flagged, none
    model_name: str = ""  # the "model" in responses (default: the card's model_name, else ximgctx) @ digest
    retry_after_s: int = 1  # Retry-After header of a 503 when the queue is full
    state_poll_s: float = 1.0  # seconds between checks of the loop store's generation (memory rebuilt)
    replica_id: str = ""  # the id this server acknowledges purges under in the loop store (host:port:pid)
    # the folder POST /admin/reload may load models from (a body's path outside it is refused); none: only
    # the configured model (or the registry's promoted version) can be reloaded
    model_root: str = ""

    def __post_init__(self) -> None:
        positive = ("max_batch_size", "max_queue", "max_body_bytes", "max_inputs", "max_text_chars")
        for name in (*positive, "max_url_images", "max_request_pixels", "pixel_burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"serve.{name} must be a positive integer, got {value!r}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if self.explain not in ("all", "flagged", "none"):
            raise ConfigError(f"serve.explain must be all, flagged or none, got {self.explain!r}")
        if not self.state_poll_s > 0:
            raise ConfigError(f"serve.state_poll_s must be > 0, got {self.state_poll_s!r}")
        for name in ("pixel_rate", "large_image_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"serve.{name} must be an integer >= 0, got {value!r}")
        if self.pixel_burst < self.max_request_pixels:
            raise ConfigError(
                f"serve.pixel_burst ({self.pixel_burst}) must be at least serve.max_request_pixels "
                f"({self.max_request_pixels}), or a request at the limit could never be served"
            )
        if not self.url_timeout_s > 0:
            raise ConfigError(f"serve.url_timeout_s must be > 0, got {self.url_timeout_s!r}")
        self.allow_url_hosts = [str(parse_allowed_host(h)) for h in self.allow_url_hosts if h.strip()]
        self.allow_url_networks = [str(parse_network(n)) for n in self.allow_url_networks if n.strip()]
        self.parsed_keys()  # every key line checked at once

    def parsed_keys(self) -> list[ApiKey]:
        """The API keys with their scopes and names."""
        return [parse_api_key(line, f"serve.api_keys[{i}]") for i, line in enumerate(self.api_keys)]

    def check_auth(self) -> None:
        """Refuse to serve without keys anywhere but on loopback."""
        if self.no_auth and self.api_keys:
            raise ConfigError("--no-auth was given together with API keys; choose one")
        if self.no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"--no-auth serves anyone who can reach {self.host}; it is allowed on a loopback host "
                f"(127.0.0.1) only. Give API keys (--api-key-file or XIMGCTX_API_KEYS) to bind {self.host}"
            )
        if not self.no_auth and not self.api_keys:
            raise ConfigError(
                "no API keys: give --api-key-file FILE or XIMGCTX_API_KEYS, or --no-auth on 127.0.0.1"
            )
