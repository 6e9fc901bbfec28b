"""Personal data in every script and format (the cases the recognizers were tuned on): digits of other
scripts, text without spaces, obfuscated emails, handles of every platform, street-first addresses, any-case
IBANs, SSNs and ITINs after their words, and the numbers that look like phones but are not."""

from __future__ import annotations

import pytest

from ximgctx.data.record import Post, Reply
from ximgctx.governance import Redactor, govern

FOUND = [
    ("電話090-1234-5678です", "電話[PHONE]です"),
    ("メールはtaro.yamada@example.comまで", "メールは[EMAIL]まで"),
    ("我的邮箱是li.wei@example.cn谢谢", "我的邮箱是[EMAIL]谢谢"),
    ("电话13812345678", "电话[PHONE]"),
    ("شماره من ۰۹۱۲۳۴۵۶۷۸۹ است", "شماره من [PHONE] است"),
    ("رقم هاتفي 01001234567", "رقم هاتفي [PHONE]"),
    ("फ़ोन +९१ ९८७६५ ४३२१०", "फ़ोन [PHONE]"),
    ("meu celular é (11) 91234-5678", "meu celular é [PHONE]"),
    ("write to jane.doe (at) example.com", "write to [EMAIL]"),
    ("juan arroba ejemplo.es", "[EMAIL]"),
    ("mail me: ana @ example.org", "mail me: [EMAIL]"),
    ("Bluesky @declan-art.bsky.social", "Bluesky [HANDLE]"),
    ("IG: some_name", "IG: [HANDLE]"),
    ("add name#1234 on discord", "add [HANDLE] on discord"),
    ("my did is did:plc:abcdefghijklmnopqrstuvwx", "my did is [HANDLE]"),
    ("de89370400440532013000 lowercase", "[IBAN] lowercase"),
    ("my SSN is 219-09-9999 ok", "my SSN is [SSN] ok"),
    ("my ITIN is 912-78-1234", "my ITIN is [SSN]"),
    ("55, Beechwood Gardens, Cheltenham GL52 6AB", "[ADDRESS]"),
    ("vivo en Calle Mayor 12, Madrid", "vivo en [ADDRESS], Madrid"),
    ("abito in Via Roma 10", "abito in [ADDRESS]"),
    ("Keizersgracht 123 Amsterdam", "[ADDRESS] Amsterdam"),
    ("東京都新宿区西新宿2-8-1", "[ADDRESS]"),
    ("look at google.com for it", "look at [URL] for it"),
    ("my server 98.138.222.154", "my server [IP]"),  # "server" ends in "ver", it is not a version
    ("Born 12/25/1990, graduated 2012", "Born [DOB], graduated 2012"),
    ("my birthday is March 3, 1990", "my birthday is [DOB]"),
    ("my NI number is QQ 12 34 56 C", "my NI number is [ID_NUMBER]"),
    ("NI: AB 12 34 56 C", "NI: [ID_NUMBER]"),
    ("Passport no. C01X00T47 ok", "Passport no. [ID_NUMBER] ok"),
    ("driving licence MORGA753116SM9IJ", "driving licence [ID_NUMBER]"),  # a URL, not "look at" an email
]
NOT_PERSONAL = [
    "Chrome 123.0.6312.86 crashed again",
    "build 4.1.2.7 is out",
    "INT_MAX is 2147483647",
    "barcode 036000291452 on the box",
    "pi is 3.1415926 roughly",
    "meet me at the cafe.",
    "score 3-1 at 10:30, what a game",
    "released in 2024 by team#4",
    "the meeting is on 12/03/2025",
    "I was born in 1990",
    "I need a new passport 2 weeks before the trip",
    "DL is the best 2024",
]


@pytest.mark.parametrize(("text", "expected"), FOUND)
def test_found_in_every_script_and_shape(text: str, expected: str) -> None:
    assert Redactor().redact(text)[0] == expected


@pytest.mark.parametrize("text", NOT_PERSONAL)
def test_numbers_and_words_that_only_look_personal_stay(text: str) -> None:
    assert Redactor().redact(text)[0] == text


def test_meta_numbers_ids_extra_columns_and_reply_authors() -> None:
    meta = {
        "visibility": "public",
        "author": "a1",
        "userId": 4155550132,  # an account id under a camelCase id key: kept
        "contact": 4155550132.0,  # a phone stored as a float
        "source": {"extra_column": "reach me at jo@example.com"},  # shard import's extra columns
        "lang": "en",
    }
    post = Post(id="p", text="hi", replies=[Reply("thanks", "jo@example.com")], meta=meta)
    out = govern([post], key=b"m" * 32).posts[0]
    assert out.meta["userId"] == 4155550132 and out.meta["contact"] == "[PHONE]"
    assert out.meta["source"] == {"extra_column": "reach me at [EMAIL]"} and out.meta["lang"] == "en"
    assert out.replies[0].author == "[EMAIL]"
