"""Personal-data redaction with Presidio: what is found, where, and what replaces it.

Every string is matched in a *matching view*: Unicode NFKC (full-width ``＠``, ``ｊａｎｅ``, ligatures fold to
ASCII) and defanged (``[.]``, ``(dot)``, ``[at]``, ``hxxp``, ``0044`` -> ``.``, ``.``, ``@``, ``http``,
``+44``), with every character of the view mapped back to the original, so only the personal data is
replaced and the rest of the text stays byte for byte as it was. The recognizers are Presidio's analyzer
with a no-op NLP engine (no model is loaded) and the pattern recognizers of
:mod:`ximgctx.governance.recognizers`; kinds are listed in :data:`KINDS`.

Overlapping matches: the longest wins (an IBAN over the card-like digits inside it, ``@name@host`` over
its email part), equal lengths by :data:`KINDS` order. Strings that cannot hold any kind (no digit, no ``@``,
no dot inside a word, no ``/``, no spelled ``dot``; and, when a NER model finds names, no letter either) skip
the analyzers, and repeated strings are answered from a cache: that is what keeps ``govern`` on ContextBench
within a few seconds. Person names (kind ``name``) come from a spaCy pipeline the policy names
(:mod:`ximgctx.governance.names`); without one they are not redacted. Nothing here logs the text it sees.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from ximgctx.governance._presidio import import_presidio

if TYPE_CHECKING:  # Presidio (and spaCy under it) load on the first redaction, not on import
    from presidio_analyzer import AnalyzerEngine

#: redaction kinds, in the order overlapping matches are resolved
KINDS = (
    "email",
    "card",
    "iban",
    "ssn",
    "id_number",
    "dob",
    "ip",
    "crypto",
    "url",
    "handle",
    "phone",
    "address",
    "name",
)  # fmt: skip  ("name" needs a NER model: ximgctx.governance.names)

#: personal data this redactor does not find, for the model card
NOT_DETECTED = (
    "personal names unless a named-entity model was configured (ner_model; none ships: spaCy's English "
    "models are not published on the package index by their authors) and then only those it finds; street "
    "addresses without a house number; passport, driving-licence and national-id numbers only after the "
    "words that name them; dates of birth only after birth words"
)

DEFAULT_TOKENS = {kind: f"[{kind.upper()}]" for kind in KINDS}
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "IN")  # national phone formats read by default

#: ximgctx kind -> the Presidio entity name its recognizer reports
_KIND_ENTITY = {
    "email": "EMAIL_ADDRESS",
    "card": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "ssn": "US_SSN",
    "id_number": "ID_NUMBER",  # UK NI numbers; passports and driving licences after their words
    "dob": "DATE_OF_BIRTH",  # a date after "born", "DOB", "date of birth", "birthday"...
    "ip": "IP_ADDRESS",
    "crypto": "CRYPTO",
    "url": "URL",
    "handle": "HANDLE",
    "phone": "PHONE_NUMBER",
    "address": "STREET_ADDRESS",
    "name": "PERSON",  # found by the NER analyzer of ximgctx.governance.names, not by a pattern
}
_ENTITY_KIND = {v: k for k, v in _KIND_ENTITY.items()}
_DEFANG = re.compile(
    r"\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\}|\[:\]|\[@\]|\(@\)|\[at\]|\(at\)|\{at\}|hxxp"
    r"|(?<![\w+])(?<!\d[ .-])00(?=[1-9]\d)|(?<=\d )\(0\)\s?",
    re.IGNORECASE,
)
_DEFANGED = {
    "[:]": ":",
    "[@]": "@",
    "(@)": "@",
    "[at]": "@",
    "(at)": "@",
    "{at}": "@",
    "hxxp": "http",
    "00": "+",
}  # and "(0)" after a country code (+44 (0)20 ...) is dropped
_MAYBE = (
    re.compile(  # what every kind needs: a digit, @, /, :, a dot inside a word, a spelled or bracketed dot
        r"[\d@/:]|\w\.\w|\bdot\b|[\[({]\.[\])}]|\bat\s+\w+\s*\.\s*\w", re.IGNORECASE
    )
)
_TRAILING = ".,;:!?)]}'\"…“”‘’«»"


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that payment card numbers satisfy."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


#: scripts written without spaces between words (CJK, kana, Hangul, Thai): a boundary is made at each change
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0e7f\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]"
)


def matching_view(text: str) -> tuple[str, list[int], list[int]]:
    """``(view, starts, ends)``: the NFKC, defanged text with every decimal digit as ASCII and a space
    between a no-space script (CJK, Thai) and anything else, and, per view character, its source span."""
    matches = list(_DEFANG.finditer(text))
    if not matches and text.isascii():  # the common case: the view is the text
        return text, list(range(len(text))), list(range(1, len(text) + 1))
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    prev_cjk = False
    for m in [*matches, None]:
        stop = m.start() if m else len(text)
        for i in range(pos, stop):
            ch = text[i]
            cjk = False
            if ord(ch) > 127:
                # Arabic-Indic, Persian, Devanagari, full-width... digits read as ASCII ones
                piece = str(unicodedata.decimal(ch)) if ch.isdecimal() else unicodedata.normalize("NFKC", ch)
                cjk = bool(_NO_SPACE_SCRIPT.match(ch))
            else:
                piece = ch
            if cjk != prev_cjk and out and not ch.isspace() and not out[-1][-1:].isspace():
                out.append(" ")  # scripts written without spaces: a boundary the patterns can see,
                starts.append(i)  # mapped to no source character
                ends.append(i)
            prev_cjk = cjk
            out.append(piece)
            starts.extend([i] * len(piece))
            ends.extend([i + 1] * len(piece))
        if m is None:
            break
        token = m.group()
        piece = "" if token.startswith("(0)") else _DEFANGED.get(token.lower(), ".")
        out.append(piece)
        starts.extend([m.start()] * len(piece))
        ends.extend([m.end()] * len(piece))
        pos = m.end()
    return "".join(out), starts, ends


#: whether the fast paths run (the prefilter, the cache); tests and the benchmark compare both
_OPTIMISED = True


@contextmanager
def unoptimised() -> Iterator[None]:
    """Within the block every string goes through the analyzer: no prefilter, no cache (the reference the
    optimised path must equal)."""
    global _OPTIMISED
    before, _OPTIMISED = _OPTIMISED, False
    try:
        yield
    finally:
        _OPTIMISED = before


@lru_cache(maxsize=8)
def _analyzer(regions: tuple[str, ...]) -> AnalyzerEngine:
    """One analyzer per process and phone-region tuple, built on first use and shared by every redactor."""
    import_presidio()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    from ximgctx.governance.recognizers import build_recognizers

    registry = RecognizerRegistry(
        recognizers=build_recognizers(regions), global_regex_flags=re.DOTALL | re.MULTILINE
    )
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def _trim(text: str, s: int, e: int, kind: str) -> tuple[int, int]:
    # Sentence punctuation after a URL/handle/address stays outside it; a ")" closing a "(" inside stays.
    if kind in ("url", "handle", "address", "email", "name"):
        while e > s and text[e - 1] in _TRAILING:
            if text[e - 1] == ")" and text.count("(", s, e) >= text.count(")", s, e):
                break
            e -= 1
    if kind == "ssn":
        while s < e and not text[s].isdigit():
            s += 1
    if kind == "phone":
        while (
            s < e
            and text[s] in "(["
            and text.count(text[s], s, e) > text.count(")]"["([".index(text[s])], s, e)
        ):
            s += 1
        while (
            e > s
            and text[e - 1] in ")]"
            and text.count(text[e - 1], s, e) > text.count("(["[")]".index(text[e - 1])], s, e)
        ):
            e -= 1
    return s, e


def find_pii(
    text: str,
    kinds: tuple[str, ...] | list[str],
    *,
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    ner_model: str | None = None,
) -> list[Span]:
    """Non-overlapping spans of personal data in ``text`` (offsets into ``text``), for the given kinds.
    Names (kind ``"name"``) are found only with ``ner_model`` (see :mod:`ximgctx.governance.names`)."""
    wanted = tuple(k for k in KINDS if k in kinds and (k != "name" or ner_model is not None))
    ner = ner_model if "name" in wanted else None
    if not _OPTIMISED:
        return list(_find.__wrapped__(text, wanted, tuple(regions), ner)) if text else []
    if not text:
        return []
    folded = unicodedata.normalize("NFKC", text) if not text.isascii() else text
    # a name has no digit, @ or dot: with NER on, any text with a letter may hold one
    if not _MAYBE.search(folded) and not (ner and _LETTER.search(folded)):
        return []
    return list(_find(text, wanted, tuple(regions), ner))


_LETTER = re.compile(r"[^\W\d_]")


@lru_cache(maxsize=65536)
def _find(
    text: str, kinds: tuple[str, ...], regions: tuple[str, ...], ner_model: str | None
) -> tuple[Span, ...]:
    view, starts, ends = matching_view(text)
    wanted = _possible(view, kinds) if _OPTIMISED else kinds
    if not wanted:
        return ()
    patterns = [_KIND_ENTITY[k] for k in wanted if k != "name"]
    results = (
        _analyzer(regions).analyze(text=view, language="en", entities=patterns, score_threshold=0.3)
        if patterns
        else []
    )
    hits = [(r.start, r.end, _ENTITY_KIND[r.entity_type]) for r in results]
    if "name" in wanted and ner_model is not None:
        from ximgctx.governance.names import find_names

        hits += [(s, e, "name") for s, e in find_names(view, ner_model)]
    order = {k: i for i, k in enumerate(KINDS)}
    found: list[Span] = []
    for start, end, kind in hits:
        s, e = _trim(view, start, end, kind)
        if e <= s or _in_code_or_number(view, s, e, kind):
            continue
        found.append(Span(starts[s], ends[e - 1], kind))
    # the longest match wins (an IBAN over the card-like run inside it, @name@host over its email part),
    # equal lengths by KINDS order
    found.sort(key=lambda sp: (sp.start - sp.end, order[sp.kind]))
    chosen: list[Span] = []
    for sp in found:
        if all(sp.end <= c.start or sp.start >= c.end for c in chosen):
            chosen.append(sp)
    return tuple(sorted(chosen, key=lambda sp: sp.start))


_DIGIT = re.compile(r"\d")
_IBAN_START = re.compile(r"[A-Za-z]{2}\s?\d{2}")
_IP_SHAPE = re.compile(r"\d\.\d|:.*:")
_LONG_RUN = re.compile(r"[0-9A-Za-z]{26}")
_SPELLED_AT = re.compile(r"(?i)\s(?:at|arroba|\[at\])\s")


_BIRTH_WORD = re.compile(r"(?i)d\.?o\.?b|birth|born|geboren|n[ée]e?\s+le|nacid|nacimiento")
_ID_WORD = re.compile(
    r"(?i)passport|pasaporte|passeport|reisepass|licen[cs]e|\bdl\b|\bid\b|personalausweis|\bdni\b|\bnie\b|"
    r"aadhaar|\bpan\b|\bni\b"
)
#: what every address pattern holds besides a digit: a capital (a street or town name), CJK, an ordinal
#: street name, or a street word of the patterns written in any case
_ADDRESS_HINT = re.compile(
    "[A-ZÀ-Ý\u3040-\u30ff\u4e00-\u9fff]|\\d(?:st|nd|rd|th)\\b|(?i:rue|av|bd|boulevard|place|chemin|all[ée]e|"
    "impasse|quai|calle|c/|via|viale|piazza|corso|vicolo|rua|travessa|pra[çc]a|alameda|paseo|plaza|carrer|"
    "rambla|calzada)"
)
_NI_SHAPE = re.compile(r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]")


def _possible(view: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds ``view`` can hold at all, by conditions every match of their recognizers meets (digits a
    phone/card/SSN/IBAN needs at least, the characters an email, URL, handle, IP or wallet cannot do
    without): the analyzer runs only those recognizers. Output-preserving: Presidio resolves overlaps
    within one entity type only, and the rest happens here after (tests compare with :func:`unoptimised`)."""
    digits = len(_DIGIT.findall(view))
    at = "@" in view
    ok = {
        "phone": digits >= 7,
        "card": digits >= 12,
        "ssn": digits >= 9,
        "iban": digits >= 8 and bool(_IBAN_START.search(view)),
        "ip": bool(_IP_SHAPE.search(view)),
        "crypto": bool(_LONG_RUN.search(view)),
        "email": at or bool(_SPELLED_AT.search(view)),
        "url": "." in view or "://" in view,
        "handle": at or "u/" in view or "#" in view or ":" in view,
        "address": digits >= 1 and bool(_ADDRESS_HINT.search(view)),
        "id_number": digits >= 6 and bool(_ID_WORD.search(view) or _NI_SHAPE.search(view)),
        "dob": bool(_BIRTH_WORD.search(view)),
        "name": bool(_LETTER.search(view)),
    }
    return tuple(k for k in kinds if ok.get(k, True))


def _in_code_or_number(text: str, s: int, e: int, kind: str) -> bool:
    """Context that makes a match something else: ``v1.2.3.4`` / ``firmware 4.1.2.7`` (versions, not IPs),
    ``f(user.name)`` (code, not a URL), a card-like run inside a longer dashed number (an order number)."""
    before, after = text[max(0, s - 12) : s], text[e : e + 2]
    if kind == "ip":
        return bool(re.search(r"(?i)\b(?:v|version\s*|ver\.?\s*|firmware\s*|build\s*|release\s*)$", before))
    if kind == "url" and not re.match(r"(?i)(?:https?|ftp)://|www\d{0,3}\.", text[s:e]):
        return bool(re.search(r"\w\($", before) or after.startswith("("))
    if kind == "card":
        return bool(re.search(r"\d[-.]$", before) or re.match(r"[-.]\d", after))
    return False


@dataclass
class Redactor:
    """Replaces personal data by per-kind tokens and counts what it replaced (never what it saw)."""

    kinds: tuple[str, ...] = KINDS  # which kinds to redact
    tokens: dict[str, str] | None = None  # kind -> replacement; DEFAULT_TOKENS when None
    regions: tuple[str, ...] = DEFAULT_REGIONS  # phone regions: numbers without +country are read as these
    ner_model: str | None = None  # the spaCy pipeline that finds names (kind "name"); None: names stay
    _tokens: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tokens = {**DEFAULT_TOKENS, **(self.tokens or {})}
        self.kinds = tuple(self.kinds)
        self.regions = tuple(self.regions)

    def spans(self, text: str, kinds: tuple[str, ...] | None = None) -> list[Span]:
        return find_pii(
            text, self.kinds if kinds is None else kinds, regions=self.regions, ner_model=self.ner_model
        )

    def redact(self, text: str, kinds: tuple[str, ...] | None = None) -> tuple[str, Counter[str]]:
        """``(redacted_text, counts_by_kind)``; ``kinds`` overrides the redactor's kinds for this call."""
        counts: Counter[str] = Counter()
        spans = self.spans(text, kinds) if text else []
        if not spans:
            return text, counts
        out: list[str] = []
        pos = 0
        for sp in spans:
            out.append(text[pos : sp.start])
            out.append(self._tokens[sp.kind])
            counts[sp.kind] += 1
            pos = sp.end
        out.append(text[pos:])
        return "".join(out), counts

    def number_kind(self, value: int | float) -> str | None:
        """The kind of personal data a bare number is (a phone or card number stored as an integer)."""
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e19:
            value = int(value)  # a phone number stored as a float by a spreadsheet or a CSV reader
        if isinstance(value, bool) or not isinstance(value, int) or value < 1_000_000:
            return None
        digits = str(value)
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and "card" in self.kinds:
            spans = self.spans(digits, ("card",))
            if spans:
                return "card"
        for candidate in (digits, "+" + digits):
            spans = self.spans(candidate, ("phone",)) if "phone" in self.kinds else []
            if spans and spans[0].end - spans[0].start == len(candidate):
                return "phone"
        return None
