# ruff: noqa: E501  (raw records are written as the platforms export them)
"""Raw platform exports read into posts: envelopes unwrapped, text and ids found, replies with their
authors, and governance then keeping exactly the public posts (one file per export layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ximgctx.adapters import AdapterError
from ximgctx.adapters.raw_exports import iter_raw_export, post_from_raw
from ximgctx.governance import GovernancePolicy, govern

KEY = b"r" * 32
GONE_DID = "did:plc:goneaaaaaaaaaaaaaaaaaaaa"


def _write(tmp_path: Path, name: str, content: object, *, jsonl: bool = False, prefix: str = "") -> Path:
    path = tmp_path / name
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in content) + "\n")  # type: ignore[attr-defined]
    else:
        path.write_text(prefix + json.dumps(content))
    return path


def _kept(path: Path, platform: str | None = None, opt_out: tuple[str, ...] = ()) -> list[str]:
    posts = list(iter_raw_export(path, platform=platform))
    result = govern(posts, GovernancePolicy(opt_out_authors=list(opt_out)), key=KEY)
    return [p.id for p in result.posts]


def test_x_v2_response_keeps_public_tweets_and_drops_protected_authors(tmp_path: Path) -> None:
    response = {
        "data": [
            {"id": "1", "text": "public hello", "author_id": "10", "edit_history_tweet_ids": ["1"]},
            {"id": "2", "text": "followers only", "author_id": "11", "edit_history_tweet_ids": ["2"]},
            {
                "id": "3",
                "text": "@gone_user agreed",
                "author_id": "10",
                "edit_history_tweet_ids": ["3"],
                "entities": {"mentions": [{"username": "gone_user", "id": "2299"}]},
            },
        ],
        "includes": {
            "users": [
                {"id": "10", "username": "pub"},
                {"id": "11", "username": "priv", "protected": True},
                {"id": "2299", "username": "gone_user"},
            ]
        },
    }
    path = _write(tmp_path, "tweets.json", response)
    posts = list(iter_raw_export(path))
    assert [p.text for p in posts] == ["public hello", "followers only", "@gone_user agreed"]
    assert _kept(path, opt_out=("gone_user",)) == ["1", "3"]


def test_x_archive_tweets_and_direct_messages(tmp_path: Path) -> None:
    tweets = _write(
        tmp_path,
        "tweets.js",
        [{"tweet": {"id_str": "7", "full_text": "mine, public"}}],
        prefix="window.YTD.tweets.part0 = ",
    )
    assert _kept(tweets, "x_v1") == ["7"]
    dms = _write(
        tmp_path,
        "direct-messages.js",
        [
            {
                "dmConversation": {
                    "conversationId": "5-6",
                    "messages": [
                        {"messageCreate": {"recipientId": "5", "senderId": "6", "text": "secret", "id": "99"}}
                    ],
                }
            }
        ],
        prefix="window.YTD.direct_messages.part0 = ",
    )
    posts = list(iter_raw_export(dms))
    assert len(posts) == 1 and _kept(dms) == []


def test_bluesky_thread_replies_of_an_opted_out_did_are_removed(tmp_path: Path) -> None:
    thread = {
        "thread": {
            "post": {
                "uri": "at://did:plc:pubxxxxxxxxxxxxxxxxxxxxx/app.bsky.feed.post/1",
                "cid": "c1",
                "author": {"did": "did:plc:pubxxxxxxxxxxxxxxxxxxxxx", "handle": "pub.bsky.social"},
                "record": {"$type": "app.bsky.feed.post", "text": "a public post"},
            },
            "replies": [
                {
                    "post": {
                        "uri": "at://x/2",
                        "cid": "c2",
                        "author": {"handle": "gone.bsky.social", "did": GONE_DID},
                        "record": {"text": "by the opted-out person"},
                    }
                },
                {
                    "post": {
                        "uri": "at://x/3",
                        "cid": "c3",
                        "author": {"handle": "friend.bsky.social", "did": "did:plc:f"},
                        "record": {"text": "by a friend"},
                    }
                },
            ],
        }
    }
    path = _write(tmp_path, "thread.json", thread)
    posts = list(iter_raw_export(path, platform="bluesky"))
    assert [r.text for r in posts[0].replies] == ["by the opted-out person", "by a friend"]
    result = govern(posts, GovernancePolicy(opt_out_authors=[GONE_DID]), key=KEY)
    assert [r.text for r in result.posts[0].replies] == ["by a friend"]


def test_reddit_listing_discord_export_and_activitypub_create(tmp_path: Path) -> None:
    listing = {
        "kind": "Listing",
        "data": {
            "children": [
                {
                    "kind": "t3",
                    "data": {
                        "name": "t3_a",
                        "title": "T",
                        "selftext": "body",
                        "subreddit": "pics",
                        "subreddit_type": "public",
                        "author": "r1",
                        "archived": True,
                    },
                },
                {
                    "kind": "t3",
                    "data": {
                        "name": "t3_b",
                        "title": "gone",
                        "selftext": "[removed]",
                        "subreddit": "pics",
                        "subreddit_type": "public",
                        "author": "r2",
                        "removed_by_category": "moderator",
                    },
                },
                {
                    "kind": "t4",
                    "data": {"name": "t4_c", "subject": "hi", "body": "pm", "author": "r3", "dest": "r1"},
                },
            ]
        },
    }
    assert _kept(_write(tmp_path, "reddit.json", listing)) == ["t3_a"]
    discord = {
        "guild": {"id": "0", "name": "Direct Messages"},
        "channel": {"id": "1", "type": "DirectTextChat"},
        "messages": [{"id": "m1", "content": "hi", "author": {"id": "2", "name": "a"}, "timestamp": "t"}],
    }
    path = _write(tmp_path, "discord.json", discord)
    assert [p.text for p in iter_raw_export(path)] == ["hi"] and _kept(path) == []
    public = "https://www.w3.org/ns/activitystreams#Public"
    creates = [
        {
            "type": "Create",
            "to": [public],
            "object": {
                "id": "n1",
                "type": "Note",
                "attributedTo": "https://m.ex/users/a",
                "content": "<p>hello &amp; welcome</p>",
            },
        },
        {
            "type": "Create",
            "to": ["https://m.ex/users/b"],
            "object": {
                "id": "n2",
                "type": "Note",
                "attributedTo": "https://m.ex/users/a",
                "content": "<p>psst</p>",
            },
        },
    ]
    path = _write(tmp_path, "outbox.jsonl", creates, jsonl=True)
    assert next(iter_raw_export(path)).text == "hello & welcome"
    assert _kept(path) == ["n1"]


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1"}\nnot json\n')
    with pytest.raises(AdapterError, match=r"bad\.jsonl:2"):
        list(iter_raw_export(bad))
    with pytest.raises(AdapterError, match="unknown platform"):
        post_from_raw({"id": "1"}, platform="myspace")
