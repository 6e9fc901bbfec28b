"""The operator's governance key: what keys policy digests and author digests, never written to outputs.

The key comes from ``--key-file FILE`` (its bytes, surrounding white space stripped; at least 16 bytes) or
the ``XIMGCTX_GOVERNANCE_KEY`` environment variable. Without either, a random key is drawn for the process:
digests are then still unguessable but cannot be matched later (``purge --model`` needs the key that
governed the training data). ``key_id`` is an HMAC of a constant: it tells two keys apart, and reveals
nothing about the key.

    openssl rand -hex 32 > governance.key   # once; keep it with the opt-out lists, not with the data
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ximgctx.errors import ConfigError

ENV_VAR = "XIMGCTX_GOVERNANCE_KEY"
_PROCESS_KEY = secrets.token_bytes(32)


def load_key(key_file: str | Path | None = None, *, env: bool = True) -> tuple[bytes, bool]:
    """``(key, held)``: the operator's key (``held`` True) or this process's random one (``held`` False)."""
    raw: bytes | None = None
    if key_file is not None:
        try:
            raw = Path(key_file).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"{key_file}: cannot read the governance key file: {e}") from e
        where = str(key_file)
    elif env and os.environ.get(ENV_VAR):
        raw = os.environ[ENV_VAR].strip().encode("utf-8")
        where = f"${ENV_VAR}"
    if raw is None:
        return _PROCESS_KEY, False
    if len(raw) < 16:
        raise ConfigError(
            f"{where}: a governance key must hold at least 16 bytes (e.g. `openssl rand -hex 32`), got "
            f"{len(raw)}"
        )
    return raw, True


def key_id(key: bytes) -> str:
    """A short public name of ``key`` (16 hex), to tell which key made a digest."""
    return hmac.new(key, b"ximgctx governance key id", hashlib.sha256).hexdigest()[:16]
