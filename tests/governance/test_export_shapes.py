# ruff: noqa: E501  (raw records are written as the platforms export them)
"""Real export shapes, one fixture per shape: what must be dropped is dropped with its reason, public posts
of raw exports are kept, replies of opted-out people go whatever the shape of their author, and a post
that only *mentions* an opted-out person is kept with their identifiers redacted."""

from __future__ import annotations

import json

import pytest

from ximgctx.data.record import Post, Reply, post_from_dict
from ximgctx.governance import GovernancePolicy, govern
from ximgctx.governance.shapes import SHAPES, detect

KEY = b"s" * 32
GONE = ["gone_user", "did:plc:goneaaaaaaaaaaaaaaaaaaaa", "gone@mastodon.social", "2299"]
AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"

# (fixture name, raw record as the platform exports it, expected drop reason)
MUST_DROP = [
    ("x_v2 protected author in includes.users", {
        "id": "1790", "text": "members only", "author_id": "11", "edit_history_tweet_ids": ["1790"],
        "includes": {"users": [{"id": "11", "username": "locked_acc", "protected": True}]}}, "private_account"),
    ("x_archive messageCreate", {"messageCreate": {"recipientId": "5", "senderId": "6", "text": "hi",
                                                   "createdAt": "2023-01-01T00:00:00.000Z"}}, "direct_message"),
    ("x_archive recipientId", {"recipientId": "5", "senderId": "6", "text": "hi"}, "direct_message"),
    ("activitypub note to one person", {
        "@context": "https://www.w3.org/ns/activitystreams", "type": "Note", "id": "https://m.example/n/1",
        "attributedTo": "https://m.example/users/amy", "to": ["https://other.example/users/bob"], "cc": [],
        "content": "<p>just between us</p>"}, "direct_message"),
    ("activitypub followers-only note", {
        "@context": "https://www.w3.org/ns/activitystreams", "type": "Note",
        "attributedTo": "https://m.example/users/amy", "to": ["https://m.example/users/amy/followers"],
        "cc": ["https://other.example/users/bob"], "content": "friends"}, "non_public"),
    ("bluesky !no-unauthenticated on the author", {
        "uri": "at://did:plc:quietxxxxxxxxxxxxxxxxxxx/app.bsky.feed.post/3k", "cid": "bafy",
        "author": {"did": "did:plc:quietxxxxxxxxxxxxxxxxxxx", "handle": "quiet.bsky.social",
                   "labels": [{"src": "did:plc:quietxxxxxxxxxxxxxxxxxxx", "val": "!no-unauthenticated"}]},
        "record": {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2024-01-01T00:00:00Z"}},
     "private_account"),
    ("bluesky untyped chat record", {"id": "3l", "rev": "22", "text": "hey you",
                                     "sender": {"did": "did:plc:someonexxxxxxxxxxxxxxxx"},
                                     "sentAt": "2024-05-01T10:00:00Z"}, "direct_message"),
    ("bluesky typed chat record", {"$type": "chat.bsky.convo.defs#messageView", "id": "3m", "text": "yo"},
     "direct_message"),
    ("reddit removed_by_category", {"subreddit": "pics", "author": "someone", "title": "t", "selftext": "x",
                                    "removed_by_category": "moderator", "subreddit_type": "public"}, "deleted"),
    ("reddit t4_ private message", {"name": "t4_2abcd", "author": "someone", "dest": "other",
                                    "subject": "hello", "body": "private", "was_comment": False},
     "direct_message"),
    ("reddit private subreddit", {"subreddit": "secret", "author": "s", "subreddit_type": "private"},
     "non_public"),
    ("telegram private chat", {"message_id": 5, "date": 1700000000, "text": "hi",
                               "chat": {"id": 42, "type": "private", "first_name": "Al"},
                               "from": {"id": 42, "is_bot": False, "username": "al"}}, "direct_message"),
    ("telegram group", {"message_id": 6, "date": 1700000000, "text": "hi",
                        "chat": {"id": -42, "type": "supergroup", "title": "club"}}, "non_public"),
    ("discord DirectTextChat", {"guild": {"id": "0", "name": "Direct Messages"},
                                "channel": {"id": "1", "type": "DirectTextChat", "name": "bob"},
                                "author": {"id": "2", "name": "amy"}, "timestamp": "2024-01-01",
                                "content": "hi"}, "direct_message"),
    ("slack im", {"type": "message", "channel_type": "im", "user": "U1", "text": "hi", "ts": "1.2"},
     "direct_message"),
    ("slack mpim", {"type": "message", "channel_type": "mpim", "user": "U1", "text": "hi", "ts": "1.3"},
     "direct_message"),
    ("instagram inbox thread", {"participants": [{"name": "a"}, {"name": "b"}],
                                "messages": [{"sender_name": "a", "content": "hi"}],
                                "thread_path": "inbox/a_1234"}, "direct_message"),
    ("mastodon locked account", {"id": "1", "uri": "https://m.example/s/1", "visibility": "public",
                                 "content": "x", "account": {"acct": "lock", "locked": True}},
     "private_account"),
    ("isDM", {"visibility": "public", "author": "g1", "isDM": True}, "direct_message"),
    ("IsDirectMessage", {"visibility": "public", "author": "g2", "IsDirectMessage": "true"}, "direct_message"),
    ("one_to_one", {"visibility": "public", "author": "g3", "one_to_one": 1}, "direct_message"),
    ("channel: dm", {"visibility": "public", "author": "g4", "channel": "dm"}, "direct_message"),
    ("recipient", {"visibility": "public", "author": "g5", "recipient": {"id": "9"}}, "direct_message"),
    ("optOut", {"visibility": "public", "author": "o1", "optOut": True}, "opted_out_author"),
    ("opt-out", {"visibility": "public", "author": "o2", "opt-out": "yes"}, "opted_out_author"),
    ("OPT_OUT", {"visibility": "public", "author": "o3", "OPT_OUT": 1}, "opted_out_author"),
    ("settings.do_not_train", {"visibility": "public", "author": "o4", "settings": {"do_not_train": True}},
     "opted_out_author"),
    ("profile.noai", {"visibility": "public", "user": {"id": "o5", "profile": {"noai": "on"}}},
     "opted_out_author"),
    ("flags noai", {"visibility": "public", "author": "o6", "flags": ["noai"]}, "opted_out_author"),
    ("author on the opt-out list by username", {"visibility": "public", "user": {"screen_name": "Gone_User"}},
     "opted_out_author"),
    ("author on the opt-out list by profile URL", {"visibility": "public",
                                                   "author": "https://mastodon.social/@gone"},
     "opted_out_author"),
]  # fmt: skip

# raw public records that carry no visibility field because their platform never needs one
MUST_KEEP = [
    ("x_v2 public", {"id": "1791", "text": "hello", "author_id": "12", "edit_history_tweet_ids": ["1791"]}),
    ("x_v1 public", {"id_str": "55", "full_text": "hi", "user": {"id_str": "3", "screen_name": "pub",
                                                                  "protected": False}}),
    ("bluesky public", {"uri": "at://did:plc:pubxxxxxxxxxxxxxxxxxxxxx/app.bsky.feed.post/3", "cid": "c",
                        "author": {"did": "did:plc:pubxxxxxxxxxxxxxxxxxxxxx", "handle": "pub.bsky.social"},
                        "record": {"$type": "app.bsky.feed.post", "text": "hi"}}),
    ("activitypub public note", {"@context": "https://www.w3.org/ns/activitystreams", "type": "Note",
                                 "attributedTo": "https://m.example/users/amy", "to": [AS_PUBLIC],
                                 "cc": ["https://m.example/users/amy/followers"], "content": "hi"}),
    ("mastodon public", {"id": "2", "uri": "https://m.example/s/2", "visibility": "public", "content": "x",
                         "account": {"acct": "pub", "locked": False}}),
    ("threads reply_audience", {"id": "178", "media_product_type": "THREADS", "username": "t_pub",
                                "text": "hi", "reply_audience": "accounts_you_follow"}),
    ("reddit archived", {"subreddit": "pics", "author": "r_pub", "archived": True,
                         "subreddit_type": "public", "name": "t3_abc"}),
    ("reddit user-profile subreddit", {"subreddit": "u_r_pub", "author": "r_pub",
                                       "subreddit_type": "user", "name": "t3_abd"}),
    ("telegram channel", {"message_id": 7, "date": 1700000000, "text": "news",
                          "chat": {"id": -100, "type": "channel", "title": "news", "username": "newsch"}}),
]  # fmt: skip


def _post(pid: str, meta: dict, text: str = "a post", replies: list[Reply] | None = None) -> Post:
    return Post(id=pid, text=text, replies=replies or [], meta=json.loads(json.dumps(meta)))


def _policy() -> GovernancePolicy:
    return GovernancePolicy(opt_out_authors=list(GONE))


def test_the_table_names_every_platform() -> None:
    names = {s.name for s in SHAPES}
    for platform in ("x_v2", "x_v1", "x_archive_dm", "mastodon", "activitypub", "bluesky", "reddit",
                     "threads", "telegram", "discord", "slack", "instagram"):  # fmt: skip
        assert platform in names


@pytest.mark.parametrize(("name", "meta", "reason"), MUST_DROP, ids=[m[0] for m in MUST_DROP])
def test_every_private_shape_is_dropped_with_its_reason(name: str, meta: dict, reason: str) -> None:
    result = govern([_post("p", meta)], _policy(), key=KEY)
    assert result.posts == [], name
    assert result.audit.dropped_posts[reason] == 1, (name, result.audit.dropped_posts)


@pytest.mark.parametrize(("name", "meta"), MUST_KEEP, ids=[m[0] for m in MUST_KEEP])
def test_public_raw_exports_are_kept(name: str, meta: dict) -> None:
    assert detect(meta) is not None, name
    result = govern([_post("p", meta)], _policy(), key=KEY)
    assert [p.id for p in result.posts] == ["p"], (name, result.audit.dropped_posts)


def test_unknown_shapes_still_fail_closed() -> None:
    result = govern([_post("p", {"author": "x", "text": "hi"})], key=KEY)
    assert result.posts == [] and result.audit.dropped_posts["visibility_missing"] == 1


def test_an_author_flagged_once_loses_the_posts_naming_them_by_username_only() -> None:
    posts = [
        _post("a", {"visibility": "public", "user": {"id": "77", "username": "quiet"}, "optOut": True}),
        _post("b", {"visibility": "public", "author": "@Quiet"}),
        _post("c", {"visibility": "public", "author_id": "77"}),
        _post("d", {"visibility": "public", "author": "loud"}),
    ]
    assert [p.id for p in govern(posts, key=KEY).posts] == ["d"]


def test_replies_of_opted_out_people_go_whatever_their_author_shape() -> None:
    public = {"visibility": "public", "author": "host"}
    raw = {
        "id": "r", "text": "a post", "meta": {**public, "reply_authors": [
            {"id": "3301", "screen_name": "gone_user"}, {"did": "did:plc:goneaaaaaaaaaaaaaaaaaaaa",
                                                         "handle": "gone.bsky.social"},
            {"acct": "gone", "id": "8"}]},  # what a raw-export adapter keeps of the reply authors
        "replies": [
            {"text": "id first", "user": {"id": "3301", "screen_name": "gone_user"}},
            {"text": "from object", "from": {"id": "2299", "first_name": "G"}},
            {"text": "account object", "account": {"acct": "gone", "id": "8"}},
            {"text": "bluesky by handle", "author": {"handle": "gone.bsky.social",
                                                     "did": "did:plc:goneaaaaaaaaaaaaaaaaaaaa"}},
            {"text": "mastodon local acct", "author": "gone"},
            {"text": "zero width", "author": "gone\u200b_user"},
            {"text": "stays", "author": "friend"},
        ],
    }  # fmt: skip
    post = post_from_dict(raw)
    result = govern([post], _policy(), key=KEY)
    assert [r.text for r in result.posts[0].replies] == ["stays"]
    assert result.audit.removed_replies["opted_out_author"] == 6


def test_a_mention_keeps_the_post_and_redacts_the_opted_out_person() -> None:
    x_v2 = {
        "id": "1800", "author_id": "10", "edit_history_tweet_ids": ["1800"], "in_reply_to_user_id": "2299",
        "entities": {"mentions": [{"start": 0, "end": 10, "username": "gone_user", "id": "2299"}],
                     "hashtags": [{"tag": "cats"}]},
        "includes": {"users": [{"id": "10", "username": "speaker"}, {"id": "2299", "username": "gone_user"}]},
    }  # fmt: skip
    bluesky = {
        "uri": "at://did:plc:speakerxxxxxxxxxxxxxxxxx/app.bsky.feed.post/3", "cid": "c",
        "author": {"did": "did:plc:speakerxxxxxxxxxxxxxxxxx", "handle": "speaker.bsky.social"},
        "record": {"$type": "app.bsky.feed.post", "text": "hi @gone.bsky.social",
                   "facets": [{"features": [{"$type": "app.bsky.richtext.facet#mention",
                                             "did": "did:plc:goneaaaaaaaaaaaaaaaaaaaa"}]}],
                   "reply": {"parent": {"uri": "at://did:plc:goneaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/1"}}},
    }  # fmt: skip
    posts = [
        _post("x", x_v2, text="@gone_user you are right, gone_user"),
        _post("b", bluesky, text="hi @gone.bsky.social"),
    ]
    result = govern(posts, _policy(), key=KEY)
    assert [p.id for p in result.posts] == ["x", "b"], result.audit.dropped_posts
    dumped = json.dumps([{"text": p.text, "meta": p.meta} for p in result.posts])
    for ident in ("gone_user", "2299", "did:plc:goneaaaaaaaaaaaaaaaaaaaa", "gone.bsky.social"):
        assert ident not in dumped, ident
    x = result.posts[0]
    assert x.text == "[HANDLE] you are right, [HANDLE]"
    assert x.meta["includes"]["users"][0] == {"id": "10", "username": "speaker"}  # the speaker stays
    assert x.meta["entities"]["hashtags"] == [{"tag": "cats"}]
