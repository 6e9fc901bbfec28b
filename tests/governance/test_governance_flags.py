"""Fail-closed governance: every way a record says "private", one identity rule, redaction at any depth of
meta, and policy digests that do not reveal the opt-out list."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from ximgctx.data.record import Post, Reply, post_from_dict
from ximgctx.errors import ConfigError
from ximgctx.governance import GovernancePolicy, govern, read_opt_out_file
from ximgctx.governance.flags import norm_value, truthy
from ximgctx.governance.keys import ENV_VAR, key_id, load_key

KEY = b"k" * 32


def _post(pid: str, meta: dict, text: str = "a public post", replies: list[Reply] | None = None) -> Post:
    if meta.get("author") == "ok":  # one author per post: an opt-out flag on one must not drop the others
        meta = {**meta, "author": f"author-{pid}"}
    return Post(id=pid, text=text, replies=replies or [], meta=meta)


PUBLIC = {"visibility": "public", "author": "ok"}

# (meta, expected drop reason): each is written the way a real export writes it
DROPPED = [
    *[({**PUBLIC, "is_dm": v}, "direct_message") for v in (True, "true", "TRUE", " yes ", 1, "1", "on", "Y", "maybe")],  # noqa: E501
    ({**PUBLIC, "dm": "yes"}, "direct_message"),
    ({**PUBLIC, "is_direct_message": 1}, "direct_message"),
    ({**PUBLIC, "direct_message": "True"}, "direct_message"),
    *[
        ({**PUBLIC, "type": v}, "direct_message")
        for v in ("dm", "DM", "message", "DirectMessage", "direct-message", "direct message", "private_message",  # noqa: E501
                  "message_create", "Direct_Message", "ｄｍ")
    ],  # fmt: skip
    ({**PUBLIC, "event_type": "MessageCreate"}, "direct_message"),  # X API v2 DM events
    ({**PUBLIC, "kind": "t4"}, "direct_message"),  # Reddit private message
    ({**PUBLIC, "$type": "chat.bsky.convo.defs#messageView"}, "direct_message"),  # Bluesky chat
    ({**PUBLIC, "chat_type": "private"}, "direct_message"),  # Telegram
    ({**PUBLIC, "dm_conversation_id": "1582-99"}, "direct_message"),
    ({"visibility": "direct", "author": "ok"}, "direct_message"),  # Mastodon
    ({"visibility": "DM", "author": "ok"}, "direct_message"),
    ({**PUBLIC, "deleted": "1"}, "deleted"),
    ({"visibility": "public", "author": "[deleted]"}, "deleted"),  # Reddit
    ({**PUBLIC, "protected": True}, "private_account"),  # Twitter/X
    ({**PUBLIC, "user": {"id": "8", "protected": "true"}}, "private_account"),  # not user 9 (opted out)
    ({**PUBLIC, "locked": 1}, "private_account"),  # Mastodon
    ({**PUBLIC, "is_private": "on"}, "private_account"),  # Instagram
    ({**PUBLIC, "labels": [{"val": "!no-unauthenticated"}]}, "private_account"),  # Bluesky self-label
    *[({"visibility": v, "author": "ok"}, "non_public")
      for v in ("private", "unlisted", "followers", "Followers-Only", "friends", "ALL_FRIENDS", "circle", "limited")],  # fmt: skip  # noqa: E501
    ({"privacy": {"value": "SELF"}, "author": "ok"}, "non_public"),  # Facebook
    ({"privacy": "CUSTOM", "author": "ok"}, "non_public"),
    ({"visibility": "public", "subreddit_type": "private", "author": "ok"}, "non_public"),  # noqa: E501 - every field counts
    ({"visibility": "public", "subreddit_type": "restricted", "author": "ok"}, "non_public"),
    ({"audience": "close_friends", "author": "ok"}, "non_public"),
    *[({"visibility": v, "author": "ok"}, "visibility_unknown") for v in ("secret-ish", 1, True, ["public"], {"a": 1}, "")],  # noqa: E501
    ({"author": "ok"}, "visibility_missing"),
    *[({**PUBLIC, "opt_out": v}, "opted_out_author") for v in ("true", 1, "yes", "TRUE", "Y", "on")],
    ({**PUBLIC, "do_not_train": True}, "opted_out_author"),
    ({**PUBLIC, "noai": "1"}, "opted_out_author"),
    ({**PUBLIC, "indexable": False}, "opted_out_author"),  # Mastodon: not to be indexed
    ({**PUBLIC, "indexable": "false"}, "opted_out_author"),
    ({**PUBLIC, "user": {"id": "9", "indexable": "no"}}, "opted_out_author"),
]  # fmt: skip

KEPT = [
    {**PUBLIC, "over_18": True},  # Reddit NSFW: a content label, not privacy
    {**PUBLIC, "is_self": True},  # Reddit text post
    {**PUBLIC, "possibly_sensitive": True, "sensitive": "true", "spoiler_text": "cw"},
    {**PUBLIC, "reply_settings": "following"},  # who may reply to a public post
    {"visibility": "PUBLIC", "author": "ok"},
    {"visibility": " Public ", "author": "ok"},
    {"visibility": "everyone", "author": "ok"},
    {"privacy": {"value": "EVERYONE"}, "author": "ok"},
    *[{**PUBLIC, "opt_out": v, "is_dm": v} for v in (False, "false", 0, "no", "off", None, "0", " FALSE ")],
    {**PUBLIC, "indexable": True, "protected": False, "locked": "false"},
    {**PUBLIC, "type": "photo", "kind": "t3"},
]


def test_flag_battery_keeps_nothing_private_and_counts_each_reason() -> None:
    posts = [_post(f"d{i}", meta) for i, (meta, _) in enumerate(DROPPED)]
    posts += [_post(f"k{i}", meta) for i, meta in enumerate(KEPT)]
    result = govern(posts, key=KEY)
    assert sorted(p.id for p in result.posts) == sorted(f"k{i}" for i in range(len(KEPT)))
    expected: dict[str, int] = {}
    for _, reason in DROPPED:
        expected[reason] = expected.get(reason, 0) + 1
    assert {k: v for k, v in result.audit.dropped_posts.items() if v} == expected
    for meta, reason in DROPPED:  # each on its own, for a message naming the record
        got = govern([_post("x", meta)], key=KEY).audit.dropped_posts
        assert got[reason] == 1, (meta, got)


def test_truthy_and_norm_value() -> None:
    assert [truthy(v) for v in (True, "yes", " ON ", 1, 2.5, "maybe", [], {})] == [True] * 8
    assert [truthy(v) for v in (False, None, 0, "false", " No ", "off", "", "0")] == [False] * 8
    assert {
        norm_value(v) for v in ("DirectMessage", "direct-message", "direct message", "DIRECT_MESSAGE")
    } == {"direct_message"}


def test_policy_extends_the_vocabulary_and_refuses_private_visibilities() -> None:
    posts = [_post("a", {"visibility": "public", "author": "x", "type": "whisper"}),
             _post("b", {"visibility": "members", "author": "x"}),
             _post("c", {**PUBLIC, "no_training": "yes"})]  # fmt: skip
    plain = govern(posts, key=KEY).audit.dropped_posts
    assert plain["visibility_unknown"] == 1 and plain["direct_message"] == 0
    policy = GovernancePolicy(
        dm_types=["Whisper"], non_public_visibilities=["members"], opt_out_flags=["no_training"]
    )
    dropped = govern(posts, policy, key=KEY).audit.dropped_posts
    assert dropped["direct_message"] == 1 and dropped["non_public"] == 1 and dropped["opted_out_author"] == 1
    for bad in (["public", "unlisted"], ["Followers"], ["public", "members"]):
        with pytest.raises(ConfigError, match="must not include"):
            GovernancePolicy(allowed_visibilities=bad, non_public_visibilities=["members"])


# --- one identity rule -----------------------------------------------------------------------------------


def test_one_identity_rule_for_posts_replies_quotes_and_lists(tmp_path: Path) -> None:
    opt_out = tmp_path / "opt_out.txt"
    opt_out.write_text("# removal requests\n@U_GONE   # asked 2026-01-01\nuser#42\n\n")
    assert read_opt_out_file(opt_out) == {"u_gone", "user#42"}
    policy = GovernancePolicy().with_opt_outs(read_opt_out_file(opt_out))
    variants = ["U_GONE", " u_gone", "@u_gone", "＠Ｕ_ＧＯＮＥ", "u_gone "]
    posts = [_post(f"a{i}", {**PUBLIC, "author": v}) for i, v in enumerate(variants)]
    posts += [
        _post("b1", {"visibility": "public", "user": {"id": "77", "screen_name": "U_Gone"}}),
        _post("b2", {"visibility": "public", "username": "@u_gone"}),
        _post("q1", {**PUBLIC, "quoted_status": {"text": "their words", "user": {"screen_name": "U_GONE"}}}),
        _post("q2", {**PUBLIC, "retweeted_status": {"author": "@u_gone"}}),
        _post("q3", {**PUBLIC, "reblog": {"account": {"acct": "u_gone"}}}),  # Mastodon boost
        _post("q4", {**PUBLIC, "embed": {"record": {"author": {"did": "x", "handle": "u_gone"}}}}),  # Bluesky
        _post("q5", {**PUBLIC, "original": {"author": "USER#42"}}),
    ]
    raw_reply = post_from_dict(
        {
            "id": "r",
            "text": "t",
            "meta": PUBLIC,
            "replies": [
                {"text": "SECRET-r1", "user": "U_GONE"},
                {"text": "SECRET-r2", "screen_name": "@u_gone"},
                {"text": "SECRET-r3", "author": {"id": "u_gone"}},
                {"text": "kept", "username": "friend"},
            ],
        }  # fmt: skip
    )
    posts.append(raw_reply)
    posts.append(_post("m", {**PUBLIC, "mentions": ["u_gone", "friend"]}, text="hi @U_GONE"))
    result = govern(posts, policy, key=KEY)
    kept = {p.id: p for p in result.posts}
    assert sorted(kept) == ["m", "r"]
    assert [r.text for r in kept["r"].replies] == ["kept"] and kept["r"].replies[0].author == "friend"
    assert kept["m"].text == "hi [HANDLE]" and kept["m"].meta["mentions"] == ["[HANDLE]", "[HANDLE]"]
    assert result.audit.removed_replies["opted_out_author"] == 3


def test_an_opt_out_flag_on_one_post_removes_every_post_and_reply_of_that_author() -> None:
    posts = [
        _post("flag", {**PUBLIC, "author": "@Nine", "opt_out": "yes"}),
        _post("other", {**PUBLIC, "author": "NINE"}),
        _post("host", PUBLIC, replies=[Reply("SECRET", "nine"), Reply("fine", "ten")]),
    ]
    result = govern(posts, key=KEY)
    assert [p.id for p in result.posts] == ["host"] and [r.text for r in result.posts[0].replies] == ["fine"]


def test_unknown_reply_authors_follow_the_policy() -> None:
    post = _post("p", PUBLIC, replies=[Reply("ask @someone or jane@example.com"), Reply("ok", "u1")])
    kept = govern([post], GovernancePolicy(redact=["email"]), key=KEY).posts[0]
    assert (
        kept.replies[0].text == "ask [HANDLE] or [EMAIL]"
    )  # handles redacted even when the policy skips them
    dropped = govern([post], GovernancePolicy(unknown_reply_author="drop"), key=KEY)
    assert [r.text for r in dropped.posts[0].replies] == ["ok"] and dropped.audit.removed_replies[
        "unknown_author"
    ] == 1


# --- redaction everywhere text hides ---------------------------------------------------------------------


def test_meta_is_redacted_at_any_depth_with_exact_keep_paths() -> None:
    meta = {
        **PUBLIC,
        "lang": "call 415-555-0132",  # an exact keep path: left alone
        "original": {
            "type": "4111 1111 1111 1111",
            "author": "jane.doe@example.com",
            "lang": "jane.doe@example.com",  # "lang" below the top is not a keep path
            "tweet_id": "1580000000000000001",
            "user_id": "jane@example.com",  # not id-like: redacted
        },
        "phone": 4155550132,
        "card_number": 4111111111111111,
        "count": 1234567,
        "media": {"image": {"alt_text": "sign says call +44 20 7946 0958"}},
        "deep": [[{"note": ["x", {"y": "ssn 536-22-8726"}]}]],
        "jane@example.com": "a key holding an email",
        "author_id": 12345,
    }
    out = govern([_post("p", meta)], key=KEY).posts[0].meta
    assert out["lang"] == "call 415-555-0132"
    assert out["original"] == {"type": "[CARD]", "author": "[EMAIL]", "lang": "[EMAIL]",
                               "tweet_id": "1580000000000000001", "user_id": "[EMAIL]"}  # fmt: skip
    assert out["phone"] == "[PHONE]" and out["card_number"] == "[CARD]" and out["count"] == 1234567
    assert out["author_id"] == 12345
    assert out["media"]["image"]["alt_text"] == "sign says call [PHONE]"
    assert out["deep"] == [[{"note": ["x", {"y": "ssn [SSN]"}]}]]
    assert "[EMAIL]" in out and "jane@example.com" not in json.dumps(out)


def test_audit_and_logs_hold_no_record_content_or_keys(caplog: pytest.LogCaptureFixture) -> None:
    posts = [
        Post(id="p1", text="SECRET-text jane@example.com", labels={"SECRET_TASK": "SECRET_LABEL"},
             meta={**PUBLIC, "SECRET_META_KEY": "v", "visibility": "SECRET-visibility"}),
        Post(id="p2", text="ok", labels={"SECRET_TASK2": "x"}, meta={**PUBLIC, "author": "SECRET-author"},
             replies=[Reply("SECRET-reply", "r")]),
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        result = govern(posts, GovernancePolicy(opt_out_authors=["SECRET-optout"]), key=KEY)
    blob = json.dumps(result.audit.to_dict()) + caplog.text
    assert result.audit.kept_posts == 1  # p1's visibility is unknown: dropped, the value not recorded
    for secret in ("SECRET-text", "SECRET_TASK", "SECRET_LABEL", "SECRET_META_KEY", "SECRET-visibility",
                   "SECRET-author", "SECRET-reply", "SECRET-optout", "jane@example.com"):  # fmt: skip
        assert secret not in blob, secret


# --- keyed digests ------------------------------------------------------------------------------------


def test_the_published_digest_does_not_reveal_a_one_id_opt_out_list() -> None:
    secret_id = "u483920"
    policy = GovernancePolicy(opt_out_authors=[secret_id])
    result = govern([_post("p", PUBLIC)], policy)  # no key given: a random process key
    published = result.posts[0].meta["governance"]["policy_sha256"]
    audit = json.dumps(result.audit.to_dict())
    assert published in audit and secret_id not in audit and secret_id not in json.dumps(result.posts[0].meta)
    # the attacker knows the policy format and tries 10^6 ids (the real one among them), unkeyed and keyed
    # with an empty key: nothing matches
    template = json.dumps(
        {**policy.to_dict(), "opt_out_authors": ["\x00"]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    head, tail = (part.encode() for part in template.split("\\u0000"))
    found = 0
    target = bytes.fromhex(published)
    prefix = hashlib.sha256(head)  # the policy JSON up to the id, hashed once
    for i in range(1_000_000):
        candidate = f"u{i:06d}".encode()
        h = prefix.copy()
        h.update(candidate + tail)
        found += h.digest() == target or hashlib.sha256(candidate).digest() == target
    assert found == 0
    assert (head + secret_id.encode() + tail) == json.dumps(
        policy.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()  # the attack was aimed right: the real blob is among the candidates
    assert policy.public_sha256() == GovernancePolicy(opt_out_authors=["someone-else"]).public_sha256()


def test_keys_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "governance.key"
    path.write_text("  " + "ab" * 32 + "\n")
    key, held = load_key(path)
    assert held and key == ("ab" * 32).encode()
    monkeypatch.setenv(ENV_VAR, "cd" * 32)
    assert load_key() == (("cd" * 32).encode(), True)
    monkeypatch.delenv(ENV_VAR)
    process_key, held = load_key()
    assert not held and len(process_key) == 32
    (tmp_path / "short.key").write_text("tooshort")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_key(tmp_path / "short.key")
    policy = GovernancePolicy(opt_out_authors=["x"])
    assert policy.digest(KEY) == policy.digest(KEY) != policy.digest(b"o" * 32)
    marker = govern([_post("p", PUBLIC)], policy, key=KEY).posts[0].meta["governance"]
    assert marker == {"version": 2, "policy_sha256": policy.digest(KEY), "key_id": key_id(KEY)}


def test_govern_cli_keys_the_digest_and_writes_the_author_set(tmp_path: Path) -> None:
    from ximgctx.cli import govern as govern_cli
    from ximgctx.data.io import load_posts, write_posts
    from ximgctx.governance.authors import read_author_digests, trained_on_counts

    data = tmp_path / "posts.jsonl"
    write_posts([_post("a", {**PUBLIC, "author": "alice"}, replies=[Reply("hi", "bob")]),
                 _post("b", {"visibility": "private", "author": "carol"})], data)  # fmt: skip
    key_file = tmp_path / "governance.key"
    key_file.write_bytes(KEY)
    out, report, authors = tmp_path / "g.jsonl", tmp_path / "audit.json", tmp_path / "authors.json"
    args = ["--data", str(data), "--out", str(out), "--report", str(report), "--key-file", str(key_file)]
    assert govern_cli.main([*args, "--authors", str(authors)]) == 0
    marker = load_posts(out)[0].meta["governance"]
    assert marker["policy_sha256"] == GovernancePolicy().digest(KEY) and marker["key_id"] == key_id(KEY)
    audit = json.loads(report.read_text())
    assert audit["digest"] == {"kind": "hmac-sha256", "key_held": True}
    assert audit["redaction"]["not_detected"].startswith("personal names")
    digests, kid = read_author_digests(authors)
    assert kid == key_id(KEY) and trained_on_counts(digests, {"ALICE", "@bob", "carol"}, KEY) == 2
    assert KEY.decode() not in authors.read_text() + report.read_text() + out.read_text()
    assert (
        govern_cli.main(["--data", str(data), "--out", str(tmp_path / "g.parquet"), "--report", str(report)])
        == 2
    )
