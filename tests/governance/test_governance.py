"""Governance invariants: what may never reach training, redaction quality, the audit and the marker."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import yaml

from ximgctx.cli import govern as govern_cli
from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.record import Post, Reply
from ximgctx.governance import (
    DROP_REASONS,
    GovernancePolicy,
    Redactor,
    UngovernedDataError,
    check_governed,
    govern,
    governance_summary,
    is_direct_message,
    is_governed,
)
from ximgctx.governance.keys import key_id, load_key
from ximgctx.governance.pii import NOT_DETECTED, luhn_ok

REPO = Path(__file__).resolve().parents[2]


# --- policy -------------------------------------------------------------------------------------------


def test_default_policy_yaml_validates_and_is_the_default() -> None:
    policy = GovernancePolicy.from_yaml(REPO / "configs" / "governance" / "default.yaml")
    assert policy == GovernancePolicy()
    assert policy.sha256() == GovernancePolicy().sha256() and len(policy.sha256()) == 64


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"allowed_visibilities": ["public", "direct"]}, "direct"),
        ({"allowed_visibilities": []}, "allowed_visibilities"),
        ({"redact": ["email", "passport"]}, "passport"),  # ssn became a real kind
        ({"phone_region": "XX"}, "'XX'"),
        ({"drop_direct_messages": False}, "drop_direct_messages"),
        ({"tokens": {"email": ""}}, "tokens.email"),
        ({"redact_meta": "yes"}, "redact_meta"),
        ({"visibilty": ["public"]}, "visibilty"),
    ],
)
def test_policy_errors_name_the_bad_value(tmp_path: Path, data: dict, named: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=str(path)) as e:
        GovernancePolicy.from_yaml(path)
    assert named in str(e.value)


# --- filtering invariants -----------------------------------------------------------------------------


def _corpus() -> tuple[list[Post], dict[str, str]]:
    """Posts of every kind; returns them and {secret string: why it must not survive}."""
    secrets: dict[str, str] = {}

    def post(pid: str, text: str, meta: dict, replies: list[Reply] | None = None) -> Post:
        return Post(
            id=pid,
            image=f"img/{pid}.png",
            text=text,
            replies=replies or [],
            labels={"intent": ["joke"]},
            meta=meta,
        )

    posts = [
        post(
            "ok1",
            "see you all saturday",
            {"visibility": "public", "opt_out": False, "author": "u1"},
            [Reply("count me in", "u2"), Reply("SECRET-reply-by-optout-u9", "u9"), Reply("lol")],
        ),
        post(
            "ok2",
            "write to jane.doe@example.com or call (415) 555-0132",
            {
                "visibility": "public",
                "author": "u2",
                "original": {"url": "https://twitter.com/jane/status/1", "tweet_id": "4111111111111111"},
            },
        ),
        post("priv", "SECRET-private-post", {"visibility": "private", "author": "u3"}),
        post("fol", "SECRET-followers-post", {"visibility": "followers", "author": "u3"}),
        post("novis", "SECRET-no-visibility", {"author": "u3"}),
        post("dm1", "SECRET-dm-flag", {"visibility": "public", "is_dm": True, "author": "u4"}),
        post("dm2", "SECRET-dm-type", {"visibility": "public", "type": "dm", "author": "u4"}),
        post("dm3", "SECRET-dm-visibility", {"visibility": "direct", "author": "u4"}),
        post("oo1", "SECRET-listed-optout", {"visibility": "public", "author": "u8"}),
        post("oo2", "SECRET-flagged-optout", {"visibility": "public", "author": "u9", "opt_out": True}),
        post("oo3", "SECRET-optout-elsewhere", {"visibility": "public", "author": "u9", "opt_out": False}),
        post(
            "ok3",
            "reply from a listed author",
            {"visibility": "public", "author": "u5"},
            [Reply("SECRET-reply-by-listed-u8", "u8"), Reply("fine", "u6")],
        ),
    ]
    for p in posts:
        if p.text.startswith("SECRET"):
            secrets[p.text] = "dropped post"
        for r in p.replies:
            if r.text.startswith("SECRET"):
                secrets[r.text] = "removed reply"
    secrets.update({"jane.doe@example.com": "email", "(415) 555-0132": "phone", "twitter.com/jane": "url"})
    return posts, secrets


def test_govern_invariants(caplog: pytest.LogCaptureFixture) -> None:
    posts, secrets = _corpus()
    policy = GovernancePolicy(opt_out_authors=["u8"])
    with caplog.at_level(logging.DEBUG):
        result = govern(posts, policy)
    kept = {p.id: p for p in result.posts}
    assert sorted(kept) == ["ok1", "ok2", "ok3"]
    opted_out = {"u8", "u9"}  # listed, and flagged on one post (which opts out every post of u9)
    for p in result.posts:
        assert p.meta["visibility"] == "public" and not is_direct_message(p.meta)
        assert p.meta.get("author") not in opted_out
        assert all(r.author not in opted_out for r in p.replies)
        assert is_governed(p)
    assert [r.text for r in kept["ok1"].replies] == ["count me in", "lol"]
    assert kept["ok2"].text == "write to [EMAIL] or call [PHONE]"
    assert kept["ok2"].meta["original"]["url"] == "[URL]"  # raw originals are redacted too
    assert kept["ok2"].meta["original"]["tweet_id"] == "4111111111111111"  # ids are not card numbers

    audit = result.audit.to_dict()
    posts_counts = audit["posts"]
    assert posts_counts["input"] == len(posts) == posts_counts["kept"] + sum(posts_counts["dropped"].values())
    assert posts_counts["dropped"] == {
        "opted_out_author": 3,
        "direct_message": 3,
        "deleted": 0,
        "private_account": 0,
        "visibility_missing": 1,
        "visibility_unknown": 0,
        "non_public": 2,
    }
    assert set(posts_counts["dropped"]) == set(DROP_REASONS)
    assert audit["replies"] == {
        "input": 5,
        "kept": 3,
        "removed": {"opted_out_author": 2, "unknown_author": 0},
    }
    assert audit["redactions"]["email"] == 1 and audit["redactions"]["phone"] == 1
    assert audit["redactions"]["url"] == 1 and audit["policy"]["opt_out_authors"] == 1  # a count, not ids

    blob = json.dumps(audit) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in blob, f"{secrets[secret]} leaked into the report or log"
    assert "u8" not in json.dumps(audit)


def test_contextbench_like_posts_pass_unchanged_but_for_the_marker() -> None:
    posts = [
        Post(
            id=f"cb{i}",
            image=f"images/cb{i}.png",
            text=t,
            labels={"intent": ["joke"], "meaning": "ironic"},
            replies=[Reply("lol same", "u7"), Reply("count me in", "u8")],
            meta={"visibility": "public", "opt_out": False, "author": f"u{i}", "lang": "en"},
        )
        for i, t in enumerate(["when monday hits", "see you all saturday at 10:30", "3 cats, 2 dogs, 1 sign"])
    ]
    result = govern(posts)
    assert len(result.posts) == 3
    for before, after in zip(posts, result.posts, strict=True):
        a = after.to_dict()
        marker = a["meta"].pop("governance")
        assert a == before.to_dict()
        key = load_key()[0]  # no key given: the process key
        assert marker == {
            "version": 2,
            "policy_sha256": GovernancePolicy().digest(key),
            "key_id": key_id(key),
        }
    assert sum(result.audit.redactions.values()) == 0


# --- redaction quality --------------------------------------------------------------------------------

_TEMPLATES = [
    "Contact me at {} if you still want the tickets.",
    "my old address was {} but I never check it",
    "{} is where the photos are",
    "Thanks so much, reach out anytime: {}",
    "lol she really posted {} again",
    "for details see {}.",
    "Can someone tell me why {} keeps showing up in my feed?",
    "omg ({}) that was wild",
]
_ORDINARY = [
    "In 2019 we paid $1,299.99 for three tickets and it was worth it.",
    "The meeting moved to 10:30 on 2023-05-01, see you there!",
    "She scored 4.5/5 on the quiz, e.g. better than last year.",
    "Mr. Smith said the U.S. team won 3-1 in the 90th minute.",
    "The file.txt is only 3.14 MB, node.js handles it fine.",
    "We drove 1,200 miles on Route 66 back in the 1990s.",
    "Open 24/7, prices from 9.99 to 19.99 EUR.",
    "COVID-19 cases fell 12% in Q3, i.e. about 4,500 people.",
    "Population 8,336,817 and growing; founded in 1624.",
    "Version 2.10.3 fixed the bug from issue #4521.",
    "I'm @ home, call me later lol",
    "Flight 1234 leaves gate 17 at 18:45, seat 23C.",
    "3 cats, 2 dogs and 1 very confused parrot.",
    "That's 50% off, down from $80 to $40!!!",
    "Moved 12/25/2019, graduated 2012, married 2016.",  # a birth date would be personal data (dob)
    "Temperature hit 104.5F at 3pm yesterday.",
    "The score was 21-14 at halftime, final 35-28.",
    "Grade 10 students read pages 120-145 for Monday.",
    "home.it was late and yes.no one noticed",
    "Order 12345 shipped in 2 boxes weighing 3.5 kg.",
]


def _luhn_complete(prefix: str, rng: random.Random, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


def _pii_items(rng: random.Random) -> list[tuple[str, str]]:
    first = ["jane", "john", "maria", "wei", "ahmed", "olga", "sam", "priya", "lucas", "emma"]
    last = ["doe", "smith", "garcia", "chen", "khan", "ivanova", "lee", "patel", "silva", "brown"]
    domains = ["example.com", "gmail.com", "mail.co.uk", "uni.edu", "company.io", "web.de"]
    items: list[tuple[str, str]] = []
    for _ in range(60):
        f, la, d = rng.choice(first), rng.choice(last), rng.choice(domains)
        items.append(
            (
                "email",
                rng.choice(
                    [
                        f"{f}.{la}@{d}",
                        f"{f}{rng.randrange(100)}@{d}",
                        f"{f}_{la}+news@{d}",
                        f"{f.upper()}.{la.title()}@{d}",
                    ]
                ),
            )
        )
    for _ in range(80):
        a, b, c = rng.randrange(201, 989), rng.randrange(200, 999), rng.randrange(0, 10000)
        items.append(
            (
                "phone",
                rng.choice(
                    [
                        f"({a}) {b}-{c:04d}",
                        f"{a}-{b}-{c:04d}",
                        f"{a}.{b}.{c:04d}",
                        f"+1 {a} {b} {c:04d}",
                        f"1-{a}-{b}-{c:04d}",
                        f"{a}{b}{c:04d}",
                        f"+1 ({a}) {b}-{c:04d}",
                        f"+44 20 7946 {c:04d}",
                        f"+49 30 {rng.randrange(1000000, 9999999)}",
                        f"+33 1 42 68 {c // 100:02d} {c % 100:02d}",
                        f"+91 98{rng.randrange(100, 999)} {rng.randrange(10000, 99999)}",
                    ]
                ),
            )
        )
    for _ in range(60):
        name = rng.choice(first) + rng.choice(["", "_", "x"]) + rng.choice(last) + str(rng.randrange(100))
        items.append(("handle", rng.choice([f"@{name}", f"@{name[:12]}", f"u/{name}", f"/u/{name}"])))
    for _ in range(60):
        host = rng.choice(["example.com", "news.site.org", "bit.ly", "my-blog.net", "shop.co.uk", "t.co"])
        path = rng.choice(["", "/", "/path/to/page", "/watch?v=dQw4w9WgXcQ", "/a/b-c_d.html", "/3xYz"])
        items.append(
            (
                "url",
                rng.choice(
                    [
                        f"https://{host}{path}",
                        f"http://www.{host}{path}",
                        f"www.{host}{path}",
                        f"{host}{path or '/x'}",
                    ]
                ),
            )
        )
    for _ in range(30):
        number = _luhn_complete(rng.choice(["4", "51", "37", "6011"]), rng, rng.choice([15, 16]))
        items.append(
            (
                "card",
                rng.choice(
                    [
                        number,
                        " ".join(number[i : i + 4] for i in range(0, len(number), 4)),
                        "-".join(number[i : i + 4] for i in range(0, len(number), 4)),
                    ]
                ),
            )
        )
    return items


def test_redaction_recall_and_precision(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(0)
    redactor = Redactor()
    tokens = {"email": "[EMAIL]", "phone": "[PHONE]", "handle": "[HANDLE]", "url": "[URL]", "card": "[CARD]"}
    items = _pii_items(rng)
    hits, wrong_kind, extra_spans = 0, 0, 0
    per_kind: dict[str, list[int]] = {}
    for kind, value in items:
        template = rng.choice(_TEMPLATES)
        out, counts = redactor.redact(template.format(value))
        exact = out == template.format(tokens[kind])
        hits += exact
        wrong_kind += (not exact) and value not in out and sum(counts.values()) == 1
        extra_spans += max(0, sum(counts.values()) - 1)
        per_kind.setdefault(kind, [0, 0])
        per_kind[kind][0] += exact
        per_kind[kind][1] += 1
    recall = hits / len(items)
    ordinary_changed = sum(redactor.redact(s)[0] != s for s in _ORDINARY)
    false_spans = sum(sum(redactor.redact(s)[1].values()) for s in _ORDINARY) + extra_spans
    precision = hits / (hits + false_spans + wrong_kind)
    with capsys.disabled():
        print(
            f"\nredaction recall {recall:.3f} on {len(items)} items "
            f"({', '.join(f'{k} {h}/{n}' for k, (h, n) in per_kind.items())}); precision {precision:.3f}; "
            f"ordinary sentences changed {ordinary_changed}/{len(_ORDINARY)}"
        )
    assert recall >= 0.95
    for kind, (h, n) in per_kind.items():
        assert h / n >= 0.9, kind
    assert precision >= 0.95
    assert ordinary_changed == 0


# --- the marker and the training check ----------------------------------------------------------------


def test_check_governed_refuses_ungoverned_and_accepts_governed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = [Post(id=f"p{i}", text="hi", meta={"visibility": "public"}) for i in range(5)]
    with pytest.raises(UngovernedDataError) as e:
        check_governed(raw, source="data/raw.jsonl")
    msg = str(e.value)
    assert "5 of 5 posts in data/raw.jsonl" in msg and "ximgctx govern --data data/raw.jsonl" in msg
    assert "--allow-ungoverned" in msg

    governed = govern(raw).posts
    path = tmp_path / "governed.jsonl"
    write_posts(governed, path)
    loaded = load_posts(path)  # the marker survives a round trip through a manifest
    status = check_governed(loaded)
    assert status.is_governed and status.to_dict()["governed"] is True and not status.allowed_ungoverned

    mixed = loaded + raw[:2]  # a governed manifest with ungoverned posts appended is refused
    with pytest.raises(UngovernedDataError, match="2 of 7 posts"):
        check_governed(mixed)
    with caplog.at_level(logging.WARNING):
        status = check_governed(mixed, allow_ungoverned=True)
    assert status.allowed_ungoverned and "ungoverned" in caplog.text
    summary = governance_summary(mixed)
    assert summary == {
        "governed": False,
        "posts": 7,
        "governed_posts": 5,
        "ungoverned_posts": 2,
        "policy_sha256": [GovernancePolicy().digest(load_key()[0])],
        "allowed_ungoverned": False,
        "redaction_not_detected": NOT_DETECTED,
    }
    forged = Post(id="x", meta={"governance": {"version": 1, "policy_sha256": "not-a-hash"}})
    assert not is_governed(forged)


# --- the command --------------------------------------------------------------------------------------


def test_govern_cli(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    posts, secrets = _corpus()
    data = tmp_path / "posts.jsonl"
    write_posts(posts, data)
    opt_out = tmp_path / "opt_out.txt"
    opt_out.write_text("# authors who asked to be removed\nu8\n\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text((REPO / "configs" / "governance" / "default.yaml").read_text())
    out, report = tmp_path / "governed.jsonl", tmp_path / "audit.json"
    with caplog.at_level(logging.DEBUG):
        rc = govern_cli.main(
            [
                "--data",
                str(data),
                "--out",
                str(out),
                "--report",
                str(report),
                "--governance",
                str(policy),
                "--opt-out",
                str(opt_out),
            ]
        )
    assert rc == 0
    kept = load_posts(out)
    assert sorted(p.id for p in kept) == ["ok1", "ok2", "ok3"]
    check_governed(kept)
    audit = json.loads(report.read_text())
    assert audit["posts"]["input"] == 12 and audit["posts"]["kept"] == 3
    assert (
        sum(audit["posts"]["dropped"].values()) == 9 and audit["replies"]["removed"]["opted_out_author"] == 2
    )
    printed = capsys.readouterr()
    blob = report.read_text() + printed.out + printed.err + caplog.text
    for secret in secrets:
        assert secret not in blob
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data.read_text() + '{"id": "z", "text": "SECRET-bad-record", "replies": "oops"}\n')
    assert govern_cli.main(["--data", str(bad), "--out", str(out), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:13" in err and "--on-error skip" in err and "SECRET" not in err
    with caplog.at_level(logging.DEBUG):
        assert (
            govern_cli.main(
                ["--data", str(bad), "--out", str(out), "--report", str(report), "--on-error", "skip"]
            )
            == 0
        )
    assert json.loads(report.read_text())["posts"]["skipped_malformed"] == 1
    assert "SECRET-bad-record" not in caplog.text + capsys.readouterr().out
