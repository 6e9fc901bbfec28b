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

Also: handles of every platform (``@name.bsky.social``, ``did:plc:``, Discord ``name#1234``, ``IG: name``),
emails with a spaced or spelled ``@`` (``name @ host``, ``arroba``), street-first addresses (ES/IT/PT/BR/MX,
Dutch ``-straat``/``-gracht``), UK addresses ending in a postcode, Japanese addresses, any-case IBANs
(mod-97), SSNs and ITINs after their words, and phone numbers of many countries after a phone word in
many languages (:data:`CONTEXT_REGIONS`). Numbers that validate as phones but are versions, builds,
INT_MAX, long decimals or UPC/EAN barcodes (checksum) are refused.

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
from ximgctx.governance._presidio import import_presidio

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
    # "name @ host.com", "name arroba host.com" (a spaced @ or a spelled one: plain dots are enough)
    SPACED = r"(?i)(?<![\w@.])[\w+-]+(?:\.[\w+-]+)*(?:\s+@\s+|@\s+|\s+arroba\s+|\s+\[at\]\s+)[\w-]+(?:\.[\w-]+)*\.[a-z]{2,24}\b"  # noqa: E501

    def __init__(self) -> None:
        super().__init__(
            "EMAIL_ADDRESS",
            patterns=[Pattern("spelled email", self.PATTERN, 0.6), Pattern("spaced email", self.SPACED, 0.6)],
            name="spelled",
        )

    def validate_result(self, pattern_text: str) -> bool:
        host = re.split(r"(?i)\s+(?:at|arroba)\s+|\s*@\s*", pattern_text)[-1]
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
        Pattern("domain handle", r"(?<![\w@./+-])@?[\w-]+(?:\.[\w-]+)*\.(?:bsky\.social|bsky\.team)\b", 0.7),
        Pattern("at domain handle", r"(?<![\w@./+-])@\w[\w-]*(?:\.[\w-]+)+(?![\w@])", 0.6),
        Pattern("did", r"\bdid:(?:plc|web):[\w.:-]{8,}", 0.8),
        Pattern("discord tag", r"(?<![\w#@])[\w.]{2,32}#\d{4}(?!\d)", 0.6),
        Pattern("labelled handle", r"(?i)(?<=\b(?:ig|insta|instagram|twitter|tw|x|tiktok|tt|snap|snapchat|discord|threads|bsky|bluesky|telegram|tg):\s)@?[\w.]{2,30}\w", 0.6),  # noqa: E501
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__("HANDLE", patterns=self.PATTERNS, name="handle", global_regex_flags=_FLAGS)


_SUFFIX = (
    r"(?:Gardens|Grove|Mews|Row|Hill|Green|Walk|Rise|Heights|Park|Lane|Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
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
        Pattern("street first", r"(?i:calle|c/|avenida|avda\.?|av\.|via|viale|piazza|corso|vicolo|rua|travessa|praça|alameda|paseo|plaza|carrer|rambla|calzada)\s+(?:(?i:de|del|da|do|dos|das|la|las|los|di|della|dei)\s+)*[A-ZÀ-Ý0-9][\w'’.-]+(?:\s+(?:(?i:de|del|da|do|la|di)\s+)?[A-ZÀ-Ý][\w'’.-]+){0,3},?\s+(?:(?i:n[º°o]|num\.?|número|nr\.?)\s*)?\d{1,5}[a-zA-Z]?\b", 0.6),  # noqa: E501
        Pattern("dutch", r"\b[A-Z][a-zà-ÿ]+(?:straat|laan|gracht|weg|plein|kade|singel|dijk|steeg|hof)\s+\d{1,4}(?:-?[a-zA-Z]|-\d{1,3})?\b", 0.6),  # noqa: E501
        Pattern("uk postcode after street", r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][\w'’-]+\s+){1,4}(?:[A-Z][\w'’-]+),?\s+(?:[A-Z][\w'’-]+\s+)?[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b", 0.6),  # noqa: E501
        Pattern("japanese", r"(?:東京都|北海道|京都府|大阪府|[\u4e00-\u9fff]{2,3}県)\s?[\u4e00-\u9fff\u3040-\u30ff]{1,14}\s?\d{1,4}\s?(?:(?:[-−‐ー]|丁目|番地?|号|の)\s?\d{1,4}\s?){1,3}(?:号)?", 0.6),  # noqa: E501
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
        Pattern(
            "ssn after words",
            r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\W{0,3}(?:is\s+|number\s+|no\.?\s*|:\s*|#\s*)?[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{4}\b",  # noqa: E501
            0.5,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(patterns=self.PATTERNS)

    def invalidate_result(self, pattern_text: str) -> bool:
        return super().invalidate_result(re.sub(r"[^0-9 .-]", "", pattern_text).strip())


class _Itin(PatternRecognizer):
    """US ITINs (9XX-7X-XXXX and the other middle ranges) after the word ITIN or taxpayer id: the SSN
    rules refuse a leading 9, which is what an ITIN has."""

    PATTERN = r"(?i)\b(?:itin|taxpayer id(?:entification)?(?: number)?)\W{0,3}(?:is\s+|number\s+|no\.?\s*)?9\d{2}[- ]?(?:5\d|6[0-5]|7\d|8[0-8]|9[0-24-9])[- ]?\d{4}\b"  # noqa: E501

    def __init__(self) -> None:
        super().__init__("US_SSN", patterns=[Pattern("itin", self.PATTERN, 0.6)], name="itin")


class _AnyCaseIban(PatternRecognizer):
    """IBANs in any case and grouping (``de89 3704 0044 0532 0130 00``), kept only when the ISO 7064
    mod-97 checksum holds."""

    PATTERN = r"(?i)\b[a-z]{2}\d{2}(?:[ ]?[a-z0-9]{4}){2,7}(?:[ ]?[a-z0-9]{1,4})?\b"

    def __init__(self) -> None:
        super().__init__("IBAN_CODE", patterns=[Pattern("any-case iban", self.PATTERN, 0.6)], name="iban_any")

    def validate_result(self, pattern_text: str) -> bool:
        code = re.sub(r"\s", "", pattern_text).upper()
        if not 15 <= len(code) <= 34:
            return False
        moved = code[4:] + code[:4]
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


class _IdNumber(PatternRecognizer):
    """UK National Insurance numbers (their prefix rules: no D/F/I/Q/U/V, no O second, not BG/GB/KN/NK/NT/TN/
    ZZ), and passport / driving-licence / national-id numbers after the words that name them."""

    NI = r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    LABELLED = (
        r"(?<=(?i:\b(?:passport|pasaporte|passeport|reisepass|driv(?:ing|er'?s)\s+licen[cs]e|licen[cs]e|DL|"
        r"national\s+id|id\s+card|personalausweis|dni|nie|aadhaar|pan|NI)"
        r"(?:\s+(?:no|number|num|nr|card))?\.?\s*(?:is|:|#)?\s*))"
        r"(?<![\w-])(?=[A-Z]{0,5}[ -]?\d)[A-Z0-9](?:[A-Z0-9]|[ -](?=[A-Z0-9])){5,18}\b"
    )

    def __init__(self) -> None:
        super().__init__(
            "ID_NUMBER",
            patterns=[Pattern("uk ni", self.NI, 0.6), Pattern("labelled id", self.LABELLED, 0.6)],
            name="id_number",
            global_regex_flags=_FLAGS,
        )


class _DateOfBirth(PatternRecognizer):
    """A date right after the words that make it a birth date (a date alone is not personal data)."""

    DATE = (
        r"(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}(?:st|nd|rd|th)?\s+"
        r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,?\s+\d{4}|"
        r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})"
    )
    PATTERN = (
        r"(?<=(?i:\b(?:d\.?o\.?b\.?|date\s+of\s+birth|born(?:\s+on)?|birthday(?:\s+is)?|birth\s*date|"
        r"geboren(?:\s+am)?|née?\s+le|nacid[oa]\s+el|fecha\s+de\s+nacimiento))\W{0,3}(?:(?i:is|on)\s+)?)"
    )

    def __init__(self) -> None:
        super().__init__(
            "DATE_OF_BIRTH",
            patterns=[Pattern("dob", self.PATTERN + self.DATE, 0.6)],
            name="dob",
            global_regex_flags=_FLAGS,
        )


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
                if _not_phone(text, m.start, raw):
                    continue
                if formatted or (digits >= 7 and phonenumbers.is_valid_number(m.number)):
                    seen.add((m.start, m.end))
                    results.append(RecognizerResult("PHONE_NUMBER", m.start, m.end, 0.6))
        for m in _CONTEXT_CANDIDATE.finditer(text):  # any country's number right after a phone word
            if (m.start(), m.end()) in seen or any(s <= m.start() < e for s, e in seen):
                continue
            if not _PHONE_WORD.search(text[max(0, m.start() - 32) : m.start()]):
                continue
            if not _phone_context_ok(text, m.start(), m.end()) or _not_phone(text, m.start(), m.group()):
                continue
            if _valid_anywhere(phonenumbers, m.group()):
                seen.add((m.start(), m.end()))
                results.append(RecognizerResult("PHONE_NUMBER", m.start(), m.end(), 0.6))
        return results


#: regions whose numbers are accepted after a phone word (a bare run elsewhere counts only in the policy's)
CONTEXT_REGIONS = (
    "US", "GB", "DE", "FR", "IN", "IR", "BR", "EG", "CN", "JP", "KR", "MX", "ES", "IT", "NL", "RU", "TR",
    "SA", "AE", "PK", "ID", "NG", "ZA", "AU", "CA", "AR", "CO", "PL", "PT", "SE", "PH", "VN", "TH",
)  # fmt: skip
_PHONE_WORD = re.compile(
    r"(?i)(?:phone|tel|call|cell|mobile|mob|whats\s?app|sms|text me|fax|contact|number|telefone|telefon|"
    r"téléphone|teléfono|celular|móvil|movil|portable|handy|numero|número|nummer|звони|телефон|"
    r"電話|电话|手机|携帯|연락처|전화|شماره|تلفن|موبایل|هاتف|رقم|फ़ोन|फोन|मोबाइल|नंबर)\W{0,12}(?:\w+\W{1,3}){0,2}$"
)
_CONTEXT_CANDIDATE = re.compile(r"(?<![\w+.])\+?\d[\d ()-]{5,17}\d(?![\w.]\d)")
_NOT_A_NUMBER = {"2147483647", "4294967295", "9223372036854775807", "18446744073709551615"}
_VERSION_BEFORE = re.compile(
    r"(?i)(?:version|ver\.?|v|build|chrome|firefox|safari|edge|android|ios|kernel|firmware|release|update|"
    r"patch|sdk|api|python|node|java)\s*$"
)


def _not_phone(text: str, start: int, raw: str) -> bool:
    """Numbers that validate as phones but are something else: versions and builds (``Chrome
    123.0.6312.86``), INT_MAX and friends, decimals with many places, UPC/EAN barcodes (checksum)."""
    digits = re.sub(r"\D", "", raw)
    if digits in _NOT_A_NUMBER:
        return True
    if "." in raw and (_VERSION_BEFORE.search(text[max(0, start - 12) : start]) or raw.count(".") >= 3):
        return not raw.startswith("+") and " " not in raw.strip()
    if re.fullmatch(r"\d+\.\d{5,}", raw.strip()):
        return True  # a decimal with many places
    return raw.strip().isdigit() and len(digits) in (12, 13) and _gtin_ok(digits)  # UPC-A / EAN-13


def _gtin_ok(digits: str) -> bool:
    total = sum((3 if i % 2 else 1) * int(d) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == int(digits[-1])


def _valid_anywhere(phonenumbers: Any, raw: str) -> bool:
    for region in CONTEXT_REGIONS:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


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
        _AnyCaseIban(),
        _Ssn(),
        _Itin(),
        _IdNumber(),
        _DateOfBirth(),
        _Ip(),
        _Crypto(),
        _Url(),
        _Handle(),
        phone,
        _Address(),
    ]
