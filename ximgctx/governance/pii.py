"""Personal-data redaction: emails, phone numbers, @handles, URLs and card-like numbers.

Phone numbers are found with Google's ``phonenumbers`` (``PhoneNumberMatcher`` at ``Leniency.POSSIBLE``:
right length for the region, any common punctuation, ``+country`` prefixes from any region), which already
refuses dates, times, prices and ISBN-like runs; a match must also hold at least 7 digits. The other kinds
are regular expressions, since no maintained library covers them better offline (presidio needs spaCy
models that are not available here):

- ``email``: ``local@domain.tld``; found first, so its ``@domain`` is never read as a handle.
- ``card``: 13-19 digits, optionally grouped by spaces or dashes, that pass the Luhn check; found before
  phones so a card number is not half-read as one.
- ``url``: ``scheme://...``, ``www....`` and bare domains with a known top-level domain and an optional
  path (``example.com/path``); trailing sentence punctuation is left outside the match.
- ``handle``: ``@name`` (Twitter/Instagram style, up to 30 word characters and inner dots, not inside a
  word or an email)
  and Reddit's ``u/name`` / ``/u/name``.

Overlapping matches are resolved by that order (earlier kinds win). Each match is replaced by the
policy's token for its kind (``[EMAIL]`` ...). Nothing here logs the text it sees.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import phonenumbers

#: redaction kinds, in the order overlapping matches are resolved
KINDS = ("email", "card", "url", "handle", "phone")

DEFAULT_TOKENS = {
    "email": "[EMAIL]",
    "card": "[CARD]",
    "url": "[URL]",
    "handle": "[HANDLE]",
    "phone": "[PHONE]",
}

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Top-level domains a bare domain (no scheme, no www) may end with. A short list keeps "e.g." and
# "file.txt" out; the ones that are also everyday words after a missing space ("home.it", "yes.no") only
# count with a path, a port or a third label ("example.co.uk", "bit.ly/x", "news.bbc.in").
_STRONG_TLDS = {
    "com",
    "org",
    "net",
    "edu",
    "gov",
    "mil",
    "int",
    "io",
    "info",
    "biz",
    "xyz",
    "ly",
    "gl",
    "gg",
    "uk",
    "ca",
    "au",
    "nz",
    "ru",
    "jp",
    "cn",
    "br",
    "nl",
    "ch",
    "se",
    "dk",
    "fi",
    "pl",
    "kr",
    "tw",
    "hk",
    "sg",
    "za",
    "mx",
    "ar",
    "ie",
}
_WEAK_TLDS = {
    "us",
    "co",
    "me",
    "in",
    "it",
    "no",
    "at",
    "be",
    "de",
    "fr",
    "es",
    "tv",
    "ai",
    "app",
    "dev",
    "online",
    "site",
    "shop",
    "news",
    "blog",
    "tech",
}
_TLDS = "|".join(sorted(_STRONG_TLDS | _WEAK_TLDS, key=len, reverse=True))
_URL = re.compile(
    r"(?:\b(?:https?|ftp)://[^\s<>\"']+"
    r"|\bwww\d?\.[^\s<>\"']+"
    r"|(?<![\w@.-])(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>" + _TLDS + r"))\b"
    r"(?P<rest>(?::\d{2,5})?(?:/[^\s<>\"']*)?))",
    re.IGNORECASE,
)
_HANDLE = re.compile(
    r"(?<![\w@./])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?(?![\w@])|(?<![\w/])/?u/[A-Za-z0-9_-]{3,20}\b"
)
_TRAILING = ".,;:!?)]}'\""


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that payment card numbers satisfy."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def _strip_url(text: str, start: int, end: int) -> int:
    # Leave sentence punctuation after a URL outside it, but keep a ")" that closes a "(" inside it.
    while end > start and text[end - 1] in _TRAILING:
        if text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end):
            break
        end -= 1
    return end


def find_pii(
    text: str, kinds: tuple[str, ...] | list[str], *, regions: tuple[str, ...] = ("US",)
) -> list[Span]:
    """Non-overlapping spans of personal data in ``text``, for the requested kinds."""
    spans: list[Span] = []

    def free(s: int, e: int) -> bool:
        return all(e <= sp.start or s >= sp.end for sp in spans)

    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "phone":
            if sum(c.isdigit() for c in text) < 7:
                continue
            for region in regions:
                for m in phonenumbers.PhoneNumberMatcher(
                    text, region, leniency=phonenumbers.Leniency.POSSIBLE
                ):
                    s, e = m.start, m.end
                    # "(415) 555-0132" keeps its parentheses; "(4155550132)" leaves them outside.
                    if text[s] == "(" and text.count("(", s, e) > text.count(")", s, e):
                        s += 1
                    if sum(c.isdigit() for c in text[s:e]) >= 7 and free(s, e):
                        spans.append(Span(s, e, "phone"))
            continue
        pattern = {"email": _EMAIL, "card": _CARD, "url": _URL, "handle": _HANDLE}[kind]
        for m in pattern.finditer(text):
            s, e = m.start(), m.end()
            if kind == "card" and not luhn_ok(re.sub(r"\D", "", m.group())):
                continue
            if kind == "url":
                if (
                    m.group("tld")
                    and m.group("tld").lower() in _WEAK_TLDS
                    and not m.group("rest")
                    and m.group("host").count(".") < 2
                ):
                    continue
                e = _strip_url(text, s, e)
            if e > s and free(s, e):
                spans.append(Span(s, e, kind))
    return sorted(spans, key=lambda sp: sp.start)


@dataclass
class Redactor:
    """Replaces personal data by per-kind tokens and counts what it replaced (never what it saw)."""

    kinds: tuple[str, ...] = KINDS  # which kinds to redact
    tokens: dict[str, str] | None = None  # kind -> replacement; DEFAULT_TOKENS when None
    regions: tuple[str, ...] = ("US",)  # phone regions: numbers without +country are read as these

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """``(redacted_text, counts_by_kind)``."""
        counts: Counter[str] = Counter()
        if not text:
            return text, counts
        tokens = self.tokens or DEFAULT_TOKENS
        out: list[str] = []
        pos = 0
        for sp in find_pii(text, self.kinds, regions=self.regions):
            out.append(text[pos : sp.start])
            out.append(tokens[sp.kind])
            counts[sp.kind] += 1
            pos = sp.end
        if not counts:
            return text, counts
        out.append(text[pos:])
        return "".join(out), counts
