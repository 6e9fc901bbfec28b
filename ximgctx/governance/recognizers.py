"""The recognizers the redactor runs: Presidio's, tuned for social-media text, plus the kinds it lacks.

From Presidio (``presidio-analyzer``) as they ship, with validation kept: credit cards (Luhn), IBAN (ISO
7064 checksum), IP addresses (``ipaddress``), US SSN (area/group/serial rules), Bitcoin addresses (base58 /
bech32 checksum) and phone numbers (Google's ``phonenumbers`` at ``Leniency.VALID``: a real number plan
for its region, which is what keeps order numbers, coordinates, ISBNs and tracking numbers out). Extended
here: emails validated against the public-suffix snapshot that ships inside ``tldextract`` (never fetched),
cards grouped by dots, SSNs written without separators after "SSN", Ethereum addresses.

Added, since Presidio has none: ``handle`` (``@name`` in any script, Bluesky ``@name.bsky.social``,
fediverse ``@name@host``, Reddit ``u/name``), ``url`` (scheme, ``www``, or a bare domain whose suffix is
real and not a file extension or a dotted code name such as ``ASP.NET``/``Socket.IO``), spelled-out emails
(``jane dot doe at example dot com``) and street addresses (US/UK number-street-suffix, German
``Hauptstraße 5``, French ``12 rue de Rivoli``).

Not detected: personal names and addresses without a street number, which need a named-entity model.
No spaCy English model is published on the package index by its authors (only third-party re-uploads),
so none is installed; the model card's governance section states this gap
(:data:`ximgctx.governance.pii.NOT_DETECTED`).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any

from ximgctx._extras import missing_extra, require
from ximgctx.governance.pii import import_presidio

import_presidio()  # without the NLP model stacks (see there)
try:
    import tldextract
    from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )
except ImportError as e:
    raise missing_extra(e, feature="PII redaction (govern)") from None

_FLAGS = re.DOTALL | re.MULTILINE  # Presidio's default adds IGNORECASE, which street names must not have


@lru_cache(maxsize=1)
def _suffixes() -> tldextract.TLDExtract:
    # The public-suffix snapshot bundled with tldextract; no network, no cache folder.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def real_suffix(host: str) -> str:
    """The public suffix of ``host`` (``co.uk``, ``store``...), or "" when it has none."""
    return _suffixes()(host).suffix


class _Email(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return bool(real_suffix(pattern_text.rsplit("@", 1)[-1]))


class _SpelledEmail(PatternRecognizer):
    """``jane dot doe at example dot com``, ``jane (at) example (dot) com`` after defanging."""

    _SEP = r"(?:\s+(?:dot|punkt|point)\s+|\s+\.\s*|\s*\.\s+)"
    _TLD = r"(?:com|org|net|edu|gov|io|co|uk|us|ca|au|de|fr|es|it|nl|se|no|ch|at|be|in|jp|br|ru|me|info|biz)"
    PATTERN = (
        r"(?i)(?<![\w@.])[\w+-]+(?:(?:\.|"
        + _SEP
        + r")[\w+-]+)*\s+(?:at|@)\s+[\w-]+(?:"
        + _SEP
        + r"[\w-]+)*"
        + _SEP
        + _TLD
        + r"\b"
    )

    def __init__(self) -> None:
        super().__init__(
            "EMAIL_ADDRESS", patterns=[Pattern("spelled email", self.PATTERN, 0.6)], name="spelled"
        )

    def validate_result(self, pattern_text: str) -> bool:
        host = re.split(r"(?i)\s+(?:at|@)\s+", pattern_text)[-1]
        return bool(real_suffix(re.sub(r"(?i)" + self._SEP, ".", host)))


_TLD_FILE_EXT = {  # real suffixes that are far more often file extensions, code names or words
    "py", "sh", "md", "rs", "pl", "pm", "zip", "mov", "ps", "so", "cc", "sc", "ms", "ws", "mk", "ml", "am",
    "in", "it", "is", "at", "be", "me", "no", "to", "do", "go", "us", "my", "an", "as", "by", "id",
    "js", "ts", "cs", "rb", "gz", "xz", "lib", "dll", "exe", "bin", "log", "csv", "json", "yaml", "txt",
    "new", "now", "how", "one", "top", "win", "day", "fun", "live", "life", "love", "best", "cool", "page",
    "red", "blue", "pink", "black", "show", "watch", "run", "rest", "tips", "zone", "works", "world",
}  # fmt: skip
_SCHEME = r"(?:https?|ftp)://"


class _Url(PatternRecognizer):
    """URLs with a scheme or ``www``, and bare domains whose suffix is real (precision rules inside)."""

    HOST = r"(?:[\w](?:[\w-]{0,61}[\w])?\.)+[\w-]{2,63}"
    PATTERNS = [
        Pattern("scheme url", r"(?i)\b" + _SCHEME + r"[^\s<>\"'`]+", 0.8),
        Pattern("www url", r"(?i)(?<![\w.@])www\d{0,3}\.[^\s<>\"'`]+", 0.7),
        Pattern("bare domain", r"(?<![\w.@/-])" + HOST + r"(?::\d{2,5})?(?:/[^\s<>\"'`]*)?", 0.5),
    ]

    def __init__(self) -> None:
        super().__init__("URL", patterns=self.PATTERNS, name="url", global_regex_flags=_FLAGS)

    def validate_result(self, pattern_text: str) -> bool:
        if re.match(r"(?i)" + _SCHEME + r"|www\d{0,3}\.", pattern_text):
            return True
        m = re.match(r"([^/:?#]+)(.*)$", pattern_text, re.S)
        host, tail = (m.group(1), m.group(2)) if m else (pattern_text, "")
        suffix = real_suffix(host)
        if not suffix or not host.rsplit(".", 1)[-1].islower() or host.replace(".", "").isdigit():
            return False  # no public suffix, ASP.NET / Socket.IO / Vue.JS, or a number
        labels = host.count(".") + 1
        if tail or labels - suffix.count(".") > 2:  # a path, a port, or a subdomain: a URL
            return True
        return suffix not in _TLD_FILE_EXT  # bare two-label domain: not file.py, home.it, go.now


class _Handle(PatternRecognizer):
    PATTERNS = [
        Pattern("fediverse", r"(?<![\w@])@[\w.]{1,30}@(?:[\w-]+\.)+[\w-]{2,}", 0.8),
        Pattern("at handle", r"(?<![\w@./+-])@(?!\d{1,2}(?::\d\d)?\s*(?:am|pm)\b)\w(?:[\w.]{0,62}\w)?(?![\w@])", 0.6),  # noqa: E501
        Pattern("reddit", r"(?<![\w/])/?u/[\w-]{3,20}\b", 0.6),
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__("HANDLE", patterns=self.PATTERNS, name="handle", global_regex_flags=_FLAGS)


_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
    r"Parkway|Pkwy|Highway|Hwy|Square|Sq|Close|Crescent|Circle|Cir|Trail|Plaza)"
)
_NAME = r"(?:[A-Z][\w'’-]+|\d+(?:st|nd|rd|th))"


class _Address(PatternRecognizer):
    PATTERNS = [
        Pattern(
            "number street suffix",
            r"\b\d{1,5}[A-Za-z]?,?\s+(?:[NSEW]\.?\s+)?(?:" + _NAME + r"\s+){1,4}" + r"(?i:" + _SUFFIX + r")\b\.?"  # noqa: E501
            r"(?:,?\s+(?i:apt|apartment|suite|ste|unit|flat|#)\.?\s*#?\w+)?",
            0.6,
        ),
        Pattern("german words", r"\b[A-ZÄÖÜ][\wäöüß-]+\s+(?i:straße|strasse|str\.|weg|platz|allee|gasse|ring)\s+\d{1,4}[a-z]?\b", 0.6),  # noqa: E501
        Pattern("german", r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)\s+\d{1,4}[a-z]?\b", 0.6),  # noqa: E501
        Pattern("french", r"(?i)\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai)\s+(?:de\s+la\s+|de\s+l'|du\s+|des\s+|de\s+)?[\w'’-]+", 0.6),  # noqa: E501
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__("STREET_ADDRESS", patterns=self.PATTERNS, name="address", global_regex_flags=_FLAGS)


class _Card(CreditCardRecognizer):
    """Presidio's card recognizer, also reading dot-separated groups."""

    DOTTED = Pattern("dotted card", r"\b\d{4}\.\d{4}\.\d{4}\.\d{1,7}\b", 0.4)
    SERIES_2 = Pattern("mastercard 2-series", r"\b2[2-7]\d{2}[- .]?\d{4}[- .]?\d{4}[- .]?\d{4}\b", 0.4)

    def __init__(self) -> None:
        super().__init__(
            patterns=[*CreditCardRecognizer.PATTERNS, self.DOTTED, self.SERIES_2],
            replacement_pairs=[("-", ""), (" ", ""), (".", "")],
        )


class _Ssn(UsSsnRecognizer):
    """Presidio's SSN patterns at medium strength, plus nine bare digits right after "SSN"."""

    PATTERNS = [
        Pattern("ssn dashed", r"\b([0-9]{3})-([0-9]{2})-([0-9]{4})\b", 0.5),
        *[p for p in UsSsnRecognizer.PATTERNS if p.score >= 0.5],
        Pattern("ssn after label", r"(?i)(?<=ssn[:#\s])\s*[0-9]{9}\b|(?<=ssn)\s*[:#]?\s*[0-9]{9}\b", 0.5),
    ]

    def __init__(self) -> None:
        super().__init__(patterns=self.PATTERNS)

    def invalidate_result(self, pattern_text: str) -> bool:
        return super().invalidate_result(re.sub(r"[^0-9 .-]", "", pattern_text).strip())


class _Ip(IpRecognizer):
    """Presidio's IP recognizer without the bare ``::`` and without 4-part version numbers."""

    def __init__(self) -> None:
        super().__init__(patterns=[p for p in IpRecognizer.PATTERNS if p.score >= 0.5])

    def invalidate_result(self, pattern_text: str) -> bool:
        try:
            ip = ipaddress.ip_address(pattern_text.split("/")[0].split("%")[0])
        except ValueError:
            return True
        if ip.is_unspecified or ip.is_loopback:
            return True  # 0.0.0.0, ::, 127.0.0.1 name no one
        return pattern_text.count(":") == 1 or super().invalidate_result(pattern_text)


class _Crypto(CryptoRecognizer):
    ETH = Pattern("ethereum", r"\b0x[0-9a-fA-F]{40}\b", 0.6)

    def __init__(self) -> None:
        super().__init__(patterns=[*CryptoRecognizer.PATTERNS, self.ETH])

    def validate_result(self, pattern_text: str) -> bool:
        return pattern_text.startswith("0x") or bool(super().validate_result(pattern_text))


_FORMATTED_PHONE = re.compile(
    r"\+?\(?\d{1,4}\)?(?:[ .-]{1,2}\(?\d{2,6}\)?){1,4}"  # 415-555-0132, +44 7700 900123, (212) 736 5000
    r"|\+\d{1,3}[ .-]\d(?:[ .-]\d{2,6}){2,5}"  # +33 6 12 34 56 78: one digit after the country code
)
_NOT_PHONE_BEFORE = re.compile(
    r"(?i)(?:tracking|track|part|invoice|order|serial|doi|arxiv|isbn|issn|ticket|sku)\W{0,6}(?:no\.?|number|#)?\W{0,3}$"
)


_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")


class _Phone(PhoneRecognizer):
    """Presidio's phone recognizer, accepting a number that is valid for its region's number plan, or a
    possible one written like a phone number (10+ digits in groups of 2-6, not part of a longer digit run).
    A number inside a word (UUIDs, ``INV-2024-000123``, ``arXiv:2106.09685``), followed by ``/`` (DOIs),
    shaped like a date, or right after tracking/part/invoice/order/serial/DOI/ISBN is not a phone; bare
    digit runs count only in the primary region's plan."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        phonenumbers = require("phonenumbers", feature="PII redaction (govern)")
        results: list[RecognizerResult] = []
        seen: set[tuple[int, int]] = set()
        for region in self.supported_regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
                raw = m.raw_string
                if (m.start, m.end) in seen or not _phone_context_ok(text, m.start, m.end):
                    continue
                if _DATE.fullmatch(raw) or (raw.isdigit() and region != self.supported_regions[0]):
                    continue
                digits = sum(c.isdigit() for c in raw)
                formatted = digits >= 10 and bool(
                    _FORMATTED_PHONE.fullmatch(raw.lstrip("[(") if raw[:1] == "[" else raw)
                )
                if formatted or (digits >= 7 and phonenumbers.is_valid_number(m.number)):
                    seen.add((m.start, m.end))
                    results.append(RecognizerResult("PHONE_NUMBER", m.start, m.end, 0.6))
        return results


def _phone_context_ok(text: str, start: int, end: int) -> bool:
    before, after = text[max(0, start - 2) : start], text[end : end + 2]
    if before[-1:].isalnum() or after[:1].isalnum() or after[:1] == "/":
        return False
    if len(before) == 2 and before[1] in "-_:/." and before[0].isalnum():
        return False  # INV-2024-000123, arXiv:2106.09685
    if re.search(r"\d[ .-]$", before) or re.match(r"[ .-]\d", after):
        return False  # part of a longer digit run (tracking numbers, IBAN groups)
    return not _NOT_PHONE_BEFORE.search(text[max(0, start - 24) : start])


def build_recognizers(regions: tuple[str, ...]) -> list[EntityRecognizer]:
    """One instance of every recognizer; ``regions`` are the phone regions national numbers are read in."""
    phone = _Phone(supported_regions=tuple(regions))
    return [
        _Email(),
        _SpelledEmail(),
        _Card(),
        IbanRecognizer(),
        _Ssn(),
        _Ip(),
        _Crypto(),
        _Url(),
        _Handle(),
        phone,
        _Address(),
    ]
