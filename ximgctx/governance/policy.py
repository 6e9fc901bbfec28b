"""The governance policy: what may be trained on and what personal data is redacted.

A policy is a small YAML file (``configs/governance/default.yaml``), validated on load with errors that
name the bad value. Its SHA-256 (of the canonical JSON of every field, opt-out ids included) is the
identity written into every governed post, so a manifest says exactly which rules it passed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import phonenumbers
import yaml

from ximgctx import _yaml
from ximgctx.governance.pii import DEFAULT_TOKENS, KINDS

#: visibilities that are never trainable, whatever the policy lists
_NEVER_ALLOWED = {"direct", "dm", "private", "direct_message"}


@dataclass
class GovernancePolicy:
    """Rules :func:`ximgctx.governance.govern` applies. Every field has a safe default."""

    allowed_visibilities: list[str] = field(default_factory=lambda: ["public"])  # meta.visibility values kept
    drop_direct_messages: bool = True  # drop posts marked as direct messages (see govern's docstring)
    opt_out_authors: list[str] = field(default_factory=list)  # author ids whose posts and replies are removed
    honor_post_opt_out: bool = True  # a post with meta.opt_out true opts its author out everywhere
    redact: list[str] = field(default_factory=lambda: list(KINDS))  # PII kinds to redact, of KINDS
    tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOKENS))  # kind -> replacement
    phone_region: str = "US"  # region for numbers written without +country
    extra_phone_regions: list[str] = field(
        default_factory=list
    )  # further regions to read national numbers in
    redact_meta: bool = True  # also redact string values inside meta (raw originals kept by adapters)
    meta_keep_keys: list[str] = field(  # meta keys (at any depth) whose values are never redacted
        default_factory=lambda: [
            "source",
            "visibility",
            "split",
            "author",
            "opt_out",
            "governance",
            "lang",
            "is_dm",
            "type",
            "version",
            "img",
            "image",
            "image_name",
        ]
    )
    keep_id_fields: bool = (
        True  # never redact meta values under "id" or "*_id" keys (long ids look like cards)
    )

    def __post_init__(self) -> None:
        def strings(name: str, value: Any) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(
                    f"governance policy: {name} must be a list of non-empty strings, got {value!r}"
                )
            return [v.strip() for v in value]

        self.allowed_visibilities = strings("allowed_visibilities", self.allowed_visibilities)
        if not self.allowed_visibilities:
            raise ValueError(
                "governance policy: allowed_visibilities must not be empty (nothing could be kept)"
            )
        bad = sorted(set(v.lower() for v in self.allowed_visibilities) & _NEVER_ALLOWED)
        if bad:
            raise ValueError(
                f"governance policy: allowed_visibilities must not include {bad}: direct and "
                "private messages are never trained on"
            )
        for name in ("drop_direct_messages", "honor_post_opt_out", "redact_meta", "keep_id_fields"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"governance policy: {name} must be true or false, got {getattr(self, name)!r}"
                )
        if not self.drop_direct_messages:
            raise ValueError(
                "governance policy: drop_direct_messages must be true: direct messages are never trained on"
            )
        self.opt_out_authors = sorted(
            set(
                strings(
                    "opt_out_authors",
                    [str(a) for a in self.opt_out_authors]
                    if isinstance(self.opt_out_authors, list)
                    else self.opt_out_authors,
                )
            )
        )
        self.redact = strings("redact", self.redact)
        unknown = [k for k in self.redact if k not in KINDS]
        if unknown:
            raise ValueError(f"governance policy: redact kinds must be among {list(KINDS)}, got {unknown}")
        if not isinstance(self.tokens, dict):
            raise ValueError(f"governance policy: tokens must be a mapping kind -> text, got {self.tokens!r}")
        tokens = dict(DEFAULT_TOKENS)
        for k, v in self.tokens.items():
            if k not in KINDS:
                raise ValueError(f"governance policy: tokens has unknown kind {k!r}; kinds are {list(KINDS)}")
            if not isinstance(v, str) or not v:
                raise ValueError(f"governance policy: tokens.{k} must be a non-empty string, got {v!r}")
            tokens[k] = v
        self.tokens = tokens
        regions = phonenumbers.SUPPORTED_REGIONS
        for r in [self.phone_region, *strings("extra_phone_regions", self.extra_phone_regions)]:
            if not isinstance(r, str) or r.upper() not in regions:
                raise ValueError(
                    f"governance policy: phone region must be an ISO 3166 region code that "
                    f"phonenumbers knows (e.g. 'US', 'GB', 'DE'), got {r!r}"
                )
        self.phone_region = self.phone_region.upper()
        self.extra_phone_regions = [r.upper() for r in self.extra_phone_regions]
        self.meta_keep_keys = strings("meta_keep_keys", self.meta_keep_keys)

    @property
    def phone_regions(self) -> tuple[str, ...]:
        return (self.phone_region, *[r for r in self.extra_phone_regions if r != self.phone_region])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sha256(self) -> str:
        """Identity of the policy: SHA-256 of its canonical JSON."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def public_summary(self) -> dict[str, Any]:
        """The policy without the opt-out ids (only their count), for reports and model cards."""
        d = self.to_dict()
        d["opt_out_authors"] = len(self.opt_out_authors)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GovernancePolicy:
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"governance policy: unknown keys {unknown}; known keys are {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GovernancePolicy:
        """Load and validate a policy file; errors name the file and the bad value."""
        path = Path(path)
        try:
            data = _yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{path}: a governance policy is a mapping, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def with_opt_outs(self, authors: list[str] | set[str]) -> GovernancePolicy:
        """A copy with more opted-out author ids (e.g. from an opt-out list file)."""
        d = self.to_dict()
        d["opt_out_authors"] = sorted(set(self.opt_out_authors) | {str(a) for a in authors})
        return GovernancePolicy.from_dict(d)


def read_opt_out_file(path: str | Path) -> set[str]:
    """Author ids, one per line; blank lines and ``#`` comments are ignored."""
    out: set[str] = set()
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        s = line.split("#", 1)[0].strip()
        if s:
            out.add(s)
    return out
