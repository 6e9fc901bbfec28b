"""The governance policy: what may be trained on and what personal data is redacted.

A policy is a small YAML file (``configs/governance/default.yaml``), validated on load with errors that
name the bad value. The identity written into every governed post and into model cards is
:meth:`GovernancePolicy.digest`: an HMAC-SHA256 of the canonical JSON of every field (normalised opt-out
ids included) under a key the operator holds (:func:`ximgctx.governance.keys.load_key`), so nobody without
the key can test a guessed opt-out list against it. :meth:`GovernancePolicy.public_sha256` hashes only
what may be published (opt-out ids replaced by their count).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ximgctx.governance.flags as flags
from ximgctx._extras import require
from ximgctx.config import config_from_dict, read_yaml
from ximgctx.errors import ConfigError
from ximgctx.governance.identity import normalize_author
from ximgctx.governance.pii import DEFAULT_REGIONS, DEFAULT_TOKENS, KINDS

#: visibilities that are never trainable, whatever the policy lists
_NEVER_ALLOWED = {"direct", "dm", "private", "direct_message"}


def _strings(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"governance policy: {name} must be a list of non-empty strings, got {value!r}")
    return [v.strip() for v in value]


@dataclass
class GovernancePolicy:
    """Rules :func:`ximgctx.governance.govern` applies. Every field has a safe default."""

    allowed_visibilities: list[str] = field(  # visibility values kept (normalised, see flags.norm_value)
        default_factory=lambda: list(flags.PUBLIC_VISIBILITIES)
    )
    non_public_visibilities: list[str] = field(default_factory=list)  # more values dropped as non_public
    dm_types: list[str] = field(default_factory=list)  # more type/kind values meaning a direct message
    opt_out_flags: list[str] = field(default_factory=list)  # more meta flags meaning "my author opted out"
    drop_direct_messages: bool = True  # drop posts marked as direct messages (see flags); must stay true
    opt_out_authors: list[str] = field(default_factory=list)  # author ids whose posts and replies are removed
    honor_post_opt_out: bool = True  # a post flagged opted-out opts its author out everywhere
    drop_deleted: bool = True  # drop posts marked deleted/removed (Reddit's [deleted]/[removed] included)
    unknown_reply_author: str = "keep"  # replies with no author: keep (handles redacted) or drop
    redact: list[str] = field(default_factory=lambda: list(KINDS))  # personal-data kinds to redact, of KINDS
    tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOKENS))  # kind -> replacement
    phone_region: str = "US"  # region for numbers written without +country
    extra_phone_regions: list[str] = field(  # further regions whose national formats are read
        default_factory=lambda: [r for r in DEFAULT_REGIONS if r != "US"]
    )
    redact_meta: bool = True  # also redact strings (and phone/card numbers) inside meta, at any depth
    meta_keep_keys: list[str] = field(  # exact meta paths ("lang", "latent.image.scene") never redacted
        default_factory=lambda: ["source", "visibility", "split", "opt_out", "governance", "lang", "version"]
    )
    # keep "id"/"*_id" values and authors (AUTHOR_KEYS values at any depth: the post's, a quoted post's) when
    # they look like ids (one token; "@x" kept as "x"): erasure after a later opt-out finds the author by them
    keep_id_fields: bool = True
    # the spaCy pipeline that finds person names (kind "name"): a folder saved by nlp.to_disk or an installed
    # package, run by Presidio's spaCy NLP engine; None: no NER runs, names are not redacted (the audit says
    # so). Never downloaded.
    ner_model: str | None = None

    def __post_init__(self) -> None:
        self._check_visibilities()
        for name in (
            "drop_direct_messages",
            "honor_post_opt_out",
            "redact_meta",
            "keep_id_fields",
            "drop_deleted",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"governance policy: {name} must be true or false, got {getattr(self, name)!r}"
                )
        if not self.drop_direct_messages:
            raise ConfigError(
                "governance policy: drop_direct_messages must be true: direct messages are never trained on"
            )
        if self.unknown_reply_author not in ("keep", "drop"):
            raise ConfigError(
                "governance policy: unknown_reply_author must be 'keep' or 'drop', got "
                f"{self.unknown_reply_author!r}"
            )
        raw = (
            [str(a) for a in self.opt_out_authors]
            if isinstance(self.opt_out_authors, list)
            else self.opt_out_authors
        )
        self.opt_out_authors = sorted(
            {a for a in (normalize_author(a) for a in _strings("opt_out_authors", raw)) if a is not None}
        )
        self._check_redaction()
        self._check_ner_model()
        self.meta_keep_keys = _strings("meta_keep_keys", self.meta_keep_keys)

    def _check_visibilities(self) -> None:
        self.allowed_visibilities = [
            flags.norm_value(v) for v in _strings("allowed_visibilities", self.allowed_visibilities)
        ]
        for name in ("non_public_visibilities", "dm_types", "opt_out_flags"):
            setattr(self, name, [flags.norm_value(v) for v in _strings(name, getattr(self, name))])
        if not self.allowed_visibilities:
            raise ConfigError(
                "governance policy: allowed_visibilities must not be empty (nothing could be kept)"
            )
        never = {
            *_NEVER_ALLOWED,
            *flags.NON_PUBLIC_VISIBILITIES,
            *flags.DM_VISIBILITIES,
            *self.non_public_visibilities,
        }
        bad = sorted(set(self.allowed_visibilities) & never)
        if bad:
            raise ConfigError(
                f"governance policy: allowed_visibilities must not include {bad}: direct messages and "
                "non-public posts are never trained on"
            )

    def _check_redaction(self) -> None:
        self.redact = _strings("redact", self.redact)
        unknown = [k for k in self.redact if k not in KINDS]
        if unknown:
            raise ConfigError(f"governance policy: redact kinds must be among {list(KINDS)}, got {unknown}")
        if not isinstance(self.tokens, dict):
            raise ConfigError(
                f"governance policy: tokens must be a mapping kind -> text, got {self.tokens!r}"
            )
        tokens = dict(DEFAULT_TOKENS)
        for k, v in self.tokens.items():
            if k not in KINDS:
                raise ConfigError(
                    f"governance policy: tokens has unknown kind {k!r}; kinds are {list(KINDS)}"
                )
            if not isinstance(v, str) or not v:
                raise ConfigError(f"governance policy: tokens.{k} must be a non-empty string, got {v!r}")
            tokens[k] = v
        self.tokens = tokens
        phonenumbers = require("phonenumbers", feature="governance (GovernancePolicy, govern)")
        for r in [self.phone_region, *_strings("extra_phone_regions", self.extra_phone_regions)]:
            if not isinstance(r, str) or r.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigError(
                    f"governance policy: phone region must be an ISO 3166 region code that "
                    f"phonenumbers knows (e.g. 'US', 'GB', 'DE'), got {r!r}"
                )
        self.phone_region = self.phone_region.upper()
        self.extra_phone_regions = [r.upper() for r in self.extra_phone_regions]

    def _check_ner_model(self) -> None:
        if self.ner_model is None:
            return
        if not isinstance(self.ner_model, str) or not self.ner_model.strip():
            raise ConfigError(
                "governance policy: ner_model must be a spaCy pipeline (a folder saved with nlp.to_disk, or "
                f"an installed package name) or null, got {self.ner_model!r}"
            )
        self.ner_model = self.ner_model.strip()
        from ximgctx.governance.names import check_ner_model

        check_ner_model(self.ner_model, "governance policy: ner_model")

    @property
    def phone_regions(self) -> tuple[str, ...]:
        return (self.phone_region, *[r for r in self.extra_phone_regions if r != self.phone_region])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _canonical(self, data: dict[str, Any]) -> bytes:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def digest(self, key: bytes) -> str:
        """The policy's identity for governed posts and model cards: HMAC-SHA256 under the operator's key of
        its canonical JSON, opt-out ids included. Without ``key`` it cannot be reproduced or tested."""
        return hmac.new(key, self._canonical(self.to_dict()), hashlib.sha256).hexdigest()

    def public_sha256(self) -> str:
        """SHA-256 of what may be published: the policy with opt-out ids replaced by their count."""
        return hashlib.sha256(self._canonical(self.public_summary())).hexdigest()

    def sha256(self) -> str:
        """Same as :meth:`public_sha256` (it never covers the opt-out ids, which must not be guessable)."""
        return self.public_sha256()

    def public_summary(self) -> dict[str, Any]:
        """The policy without the opt-out ids (only their count), for reports and model cards."""
        d = self.to_dict()
        d["opt_out_authors"] = len(self.opt_out_authors)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str = "governance policy") -> GovernancePolicy:
        """Build and validate a policy; errors name ``source`` and the key."""
        try:
            return config_from_dict(cls, dict(data or {}))
        except (TypeError, ValueError) as e:  # ConfigError, and the checks of __post_init__
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def from_yaml(cls, path: str | Path) -> GovernancePolicy:
        """Load and validate a policy file; errors name the file and the bad value."""
        return cls.from_dict(read_yaml(path, "governance policy"), source=str(path))

    def with_opt_outs(self, authors: list[str] | set[str]) -> GovernancePolicy:
        """A copy with more opted-out author ids (e.g. from an opt-out list file)."""
        d = self.to_dict()
        d["opt_out_authors"] = sorted(
            set(self.opt_out_authors) | {str(a) for a in authors}
        )  # normalised on init
        return GovernancePolicy.from_dict(d)


def read_opt_out_file(path: str | Path) -> set[str]:
    """Normalised author ids, one per line; blank lines and ``#`` comments (at a line's start or after
    white space) are ignored. Raises :class:`ximgctx.errors.InputError` naming the file when unreadable."""
    from ximgctx.errors import InputError

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the opt-out list: {e}") from e
    out: set[str] = set()
    for line in text.splitlines():
        s = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
        norm = normalize_author(s)
        if norm:
            out.add(norm)
    return out
