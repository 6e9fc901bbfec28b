"""The queue's settings, and the operator's key that turns labeler names and authors into digests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ximgctx.errors import ConfigError

__all__ = ["DEFAULT_PRIORITIES", "SHOW_SCORES", "QueueConfig", "database_url", "read_queue_key"]

#: Where items come from, and how urgent each source is (higher is leased first).
DEFAULT_PRIORITIES = {"review": 100, "select": 50, "file": 10}


#: When the labeling page shows the model's scores: never (the default: no anchoring on the model), after
#: the labeler's answer is stored (beside the labels they chose), or always (beside every label, as before).
SHOW_SCORES = ("never", "after", "always")


def read_queue_key(path: str | os.PathLike[str] | None = None, env: str = "XIMGCTX_QUEUE_KEY") -> bytes:
    """The HMAC key for labeler and author digests: a file's content (stripped) or the environment variable.

    The operator holds it; without it nobody can tell from the database who voted or whose posts wait.
    """
    if path is not None:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the queue key file ({e.strerror or e})") from None
    else:
        key = os.environ.get(env, "").strip().encode()
        if not key:
            raise ConfigError(f"no queue key: give --key-file FILE or set {env} (at least 16 bytes)")
    if len(key) < 16:
        raise ConfigError(f"the queue key must be at least 16 bytes, got {len(key)}")
    return key


def database_url(db: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL: a file path means SQLite; ``postgresql://`` gets the psycopg (3) driver."""
    text = str(db)
    if "://" not in text:
        return f"sqlite:///{Path(text).absolute()}"
    if text.startswith("postgresql://") or text.startswith("postgres://"):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if text.startswith(("sqlite:", "postgresql+psycopg:")):
        return text
    raise ConfigError(f"--db must be a SQLite file or a postgresql:// URL, got {text.split('://')[0]}://")


@dataclass
class QueueConfig:
    """How items are assigned to labelers (``ximgctx queue --help`` lists the matching flags)."""

    db: str = "queue.sqlite"  # a SQLite file, or postgresql://user@host/dbname
    key: bytes = field(default=b"", repr=False)  # HMAC key for labeler and author digests (never logged)
    overlap: int = 3  # distinct labelers asked about each item
    lease_s: float = 600.0  # a lease not voted on within this many seconds expires; the item returns
    gold_rate: float = 0.1  # chance that a lease goes to a gold item the labeler has not seen yet
    gold_overlap: int = 1_000_000  # gold items may be shown to this many labelers (all, by default)
    session_s: float = 12 * 3600.0  # lifetime of a browser session after a token login
    max_image_bytes: int = 5 << 20  # image bytes stored with one item
    priorities: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))  # source -> rank
    seed: int | None = None  # seeds the gold draw (tests); None: fresh randomness
    # the model's scores on the labeling page: never; after the labeler's answer is stored; or always
    show_scores: Literal["never", "after", "always"] = "never"

    def __post_init__(self) -> None:
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 1:
            raise ConfigError(f"queue.overlap must be a positive integer, got {self.overlap!r}")
        if not self.lease_s > 0:
            raise ConfigError(f"queue.lease_s must be > 0, got {self.lease_s!r}")
        if not 0.0 <= self.gold_rate <= 1.0:
            raise ConfigError(f"queue.gold_rate must be in [0, 1], got {self.gold_rate!r}")
        if self.show_scores not in SHOW_SCORES:
            raise ConfigError(
                f"queue.show_scores must be one of {list(SHOW_SCORES)}, got {self.show_scores!r}"
            )
        if self.key and len(self.key) < 16:
            raise ConfigError(f"queue.key must be at least 16 bytes, got {len(self.key)}")
