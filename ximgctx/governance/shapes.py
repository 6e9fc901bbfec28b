"""Where each platform's export says who may read a record, whether it is a message, deleted or opted out,
and who wrote it: a table of export shapes, read by one small rule engine.

Each :class:`Shape` row is data: how the shape is recognised (``detect``: paths that must all exist, any
of several alternatives) and paths with a test for each question. A path is dotted (``user.protected``);
``[]`` walks every element of a list (``labels[].val``) and ``[author]`` only the elements that name the
record's own author (``includes.users[author].protected``: X API v2 ships the author and every mentioned
account side by side). Tests: ``truthy`` (a flag, read by :func:`flags.truthy`), ``set`` (present and not
null), ``=a|b`` (the normalised value is one of these), ``^a|b`` (starts with), ``!=a|b`` (present and
none of these).

For a recognised shape, ``public`` says whether the platform's records are public unless a rule says
otherwise (a raw X v2 tweet or Bluesky post has no visibility field because it never needs one); records
of shapes that are not recognised keep the fail-closed rule of :mod:`ximgctx.governance.core` (no
visibility, dropped). ``ignore`` lists keys that look like privacy fields but are not (Threads
``reply_audience``: who may reply, not who may read), and ``mentions`` the paths that name accounts a record
only *mentions* (never a drop reason: their identifiers are redacted when they opted out).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ximgctx.governance.flags as flags

AS_PUBLIC = ("https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public")


@dataclass(frozen=True)
class Shape:
    name: str
    detect: tuple[tuple[str, ...], ...]  # alternatives, each a tuple of paths that must all be present
    public: bool = False  # records are public unless a rule below (or a visibility field) says otherwise
    dm: tuple[str, ...] = ()  # "path test" rules meaning a direct/private message
    private: tuple[str, ...] = ()  # rules meaning a private account
    closed: tuple[str, ...] = ()  # rules meaning a members-only place (a group, a server, a workspace)
    deleted: tuple[str, ...] = ()
    opt_out: tuple[str, ...] = ()
    public_if: tuple[str, ...] = ()  # rules meaning public (ActivityPub addressing)
    author: tuple[str, ...] = ()  # paths naming the record's own author (ids, handles, DIDs, objects)
    mentions: tuple[str, ...] = ()  # paths naming accounts the record mentions or replies to
    ignore: tuple[str, ...] = ()  # top-level keys that are not visibility fields in this shape


#: the export shapes, first match wins (more specific shapes first)
SHAPES: tuple[Shape, ...] = (
    Shape(
        "x_archive_dm",  # X archive direct-messages.js: {"dmConversation": {...}} / {"messageCreate": {...}}
        detect=(("dmConversation",), ("messageCreate",), ("recipientId",)),
        dm=("dmConversation set", "messageCreate set", "recipientId set"),
    ),
    Shape(
        "x_v2",  # X API v2 tweet (data fields) with its expansions (includes.users)
        detect=(
            ("author_id", "edit_history_tweet_ids"),
            ("author_id", "includes"),
            ("author_id", "public_metrics"),
        ),
        public=True,
        dm=("dm_conversation_id set", "event_type =message_create"),
        private=("includes.users[author].protected truthy", "author.protected truthy"),
        deleted=("withheld.scope =tweet|status",),
        author=("author_id", "includes.users[author]"),
        mentions=("entities.mentions", "in_reply_to_user_id", "includes.users", "referenced_tweets"),
    ),
    Shape(
        "x_v1",  # X API v1.1 / archive tweet.js status
        detect=(("id_str", "user"), ("id_str", "full_text"), ("tweet",)),
        public=True,
        private=("user.protected truthy", "tweet.user.protected truthy"),
        author=("user", "tweet.user"),
        mentions=(
            "entities.user_mentions",
            "tweet.entities.user_mentions",
            "in_reply_to_user_id",
            "in_reply_to_user_id_str",
            "in_reply_to_screen_name",
            "tweet.in_reply_to_user_id",
            "tweet.in_reply_to_user_id_str",
            "tweet.in_reply_to_screen_name",
        ),
    ),  # fmt: skip
    Shape(
        "activitypub",  # an ActivityPub Note/Create: public only when addressed to the Public collection
        detect=(("attributedTo",), ("@context", "to")),
        public_if=tuple(f"to[] ={a}" for a in AS_PUBLIC) + tuple(f"cc[] ={a}" for a in AS_PUBLIC),
        author=("attributedTo", "actor"),
        mentions=("tag",),
    ),
    Shape(
        "mastodon",  # Mastodon REST API status
        detect=(("account", "visibility"), ("account", "uri", "content")),
        private=("account.locked truthy",),
        opt_out=("account.noindex truthy", "account.indexable =false"),
        author=("account",),
        mentions=("mentions", "in_reply_to_account_id"),
    ),
    Shape(
        "bluesky_chat",  # chat.bsky.convo messages, typed or not
        detect=(("convoId",), ("sender", "sentAt"), ("$type ^chat_bsky",)),
        dm=("convoId set", "sentAt set", "$type ^chat_bsky"),
    ),
    Shape(
        "bluesky",  # app.bsky.feed.defs#postView / a post record
        detect=(
            ("uri", "cid", "author"),
            ("uri", "record"),
            ("record", "cid"),
            ("$type =app_bsky_feed_post",),
        ),
        public=True,
        private=("author.labels[].val =!no-unauthenticated", "labels[].val =!no-unauthenticated"),
        author=("author",),
        mentions=("record.facets", "facets", "record.reply", "reply"),
    ),
    Shape(
        "reddit",  # Reddit API/Pushshift submissions, comments and messages
        detect=(("subreddit",), ("name", "author_fullname"), ("kind", "data"), ("was_comment",)),
        public=True,
        dm=("name ^t4_", "kind =t4", "was_comment set", "dest set"),
        closed=("subreddit_type =private|restricted|employees_only|gold_restricted",),
        deleted=(
            "removed_by_category set",
            "author =[deleted]|[removed]",
            "selftext =[deleted]|[removed]",
            "body =[deleted]|[removed]",
        ),  # fmt: skip
        author=("author", "author_fullname"),
        mentions=("parent_id",),
        ignore=("archived", "subreddit_type"),  # archived: read-only, still public; user-profile subreddits
    ),
    Shape(
        "threads",  # Threads API media object
        detect=(("media_product_type",), ("reply_audience",)),
        public=True,
        author=("username", "owner"),
        ignore=("reply_audience",),  # who may reply, not who may read
    ),
    Shape(
        "telegram",  # Bot API / MTProto message with its chat
        detect=(("chat", "message_id"), ("chat", "date")),
        dm=("chat.type =private",),
        closed=("chat.type =group|supergroup",),
        public_if=("chat.type =channel",),
        author=("from", "sender_chat"),
    ),
    Shape(
        "discord",  # DiscordChatExporter message (channel and guild at the top of the export)
        detect=(("channel", "guild"), ("channel", "author", "timestamp")),
        dm=("channel.type =direct_text_chat|direct_group_text_chat|dm|group_dm",),
        closed=("channel.type =guild_text_chat|guild_voice_chat|guild_public_thread|guild_private_thread",),
        author=("author",),
        mentions=("mentions",),
    ),
    Shape(
        "slack",  # Slack export/API message
        detect=(("channel_type",), ("is_im",), ("is_mpim",), ("ts", "user", "team")),
        dm=("channel_type =im|mpim", "is_im truthy", "is_mpim truthy"),
        closed=("channel_type =group|private_channel|channel", "is_private truthy"),
        author=("user", "user_profile"),
        ignore=("type",),  # "type": "message" is every Slack record
    ),
    Shape(
        "instagram",  # Instagram data download: inbox threads are messages
        detect=(("thread_path",), ("participants", "messages"), ("media", "creation_timestamp")),
        dm=("thread_path set", "participants set"),
        private=("is_private truthy", "owner.is_private truthy"),
        author=("owner", "username"),
    ),
)

_BY_NAME = {s.name: s for s in SHAPES}
SHAPE_KEY = "export_shape"  # an adapter names the shape it read; otherwise it is recognised by its keys


def _walk(value: Any, parts: list[str], authors: set[str]) -> Iterator[Any]:
    if not parts:
        yield value
        return
    head, rest = parts[0], parts[1:]
    key, sel = (head[: head.index("[")], head[head.index("[") + 1 : -1]) if "[" in head else (head, None)
    if not isinstance(value, dict) or key not in value:
        return
    v = value[key]
    if sel is None:
        yield from _walk(v, rest, authors)
        return
    if not isinstance(v, list):
        return
    from ximgctx.governance.identity import identities

    for item in v:
        if sel == "" or (sel == "author" and identities(item) & authors):
            yield from _walk(item, rest, authors)


def values(meta: dict[str, Any], path: str, authors: set[str] | None = None) -> list[Any]:
    """Every value ``path`` reaches in ``meta`` (see the module docstring for the path language)."""
    return list(_walk(meta, path.split("."), authors or set()))


def _test(value: Any, test: str) -> bool:
    if test == "truthy":
        return flags.truthy(value)
    if test == "set":
        return value is not None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return False
    raw = str(value)
    norm = flags.norm_value(raw) if not raw.startswith(("[", "!", "http", "as:")) else raw.casefold()
    if test.startswith("!="):
        return norm not in _options(test[2:])
    if test.startswith("="):
        return norm in _options(test[1:])
    if test.startswith("^"):
        return norm.startswith(tuple(_options(test[1:])))
    raise ValueError(f"governance shape rule: unknown test {test!r}")


def _options(spec: str) -> set[str]:
    return {
        flags.norm_value(o) if not o.startswith(("[", "!", "http", "as:")) else o.casefold()
        for o in spec.split("|")
    }


def rule_holds(meta: dict[str, Any], rule: str, authors: set[str] | None = None) -> bool:
    path, test = rule.split(" ", 1)
    return any(_test(v, test) for v in values(meta, path, authors))


def detect(meta: dict[str, Any]) -> Shape | None:
    """The shape ``meta`` is written in: the one its adapter named, else the first whose keys it has."""
    named = meta.get(SHAPE_KEY)
    if isinstance(named, str) and named in _BY_NAME:
        return _BY_NAME[named]
    for shape in SHAPES:
        if any(all(_present(meta, p) for p in alt) for alt in shape.detect):
            return shape
    return None


def _present(meta: dict[str, Any], path: str) -> bool:
    return rule_holds(meta, path) if " " in path else bool(values(meta, path))


def own_authors(meta: dict[str, Any], shape: Shape) -> set[str]:
    """Every identity the shape's author paths give (ids, handles, DIDs, account objects' every id)."""
    from ximgctx.governance.identity import identities

    found: set[str] = set()
    for path in shape.author:
        if "[author]" in path:
            continue
        for v in values(meta, path):
            found |= identities(v)
    for path in shape.author:
        if "[author]" in path:
            for v in values(meta, path, found):
                found |= identities(v)
    return found


def shape_reason(meta: dict[str, Any], shape: Shape) -> str | None:
    """The drop reason the shape's own rules give, or None when they find nothing private."""
    authors = own_authors(meta, shape)
    if any(rule_holds(meta, r, authors) for r in shape.opt_out):
        return "opted_out_author"
    if any(rule_holds(meta, r, authors) for r in shape.dm):
        return "direct_message"
    if any(rule_holds(meta, r, authors) for r in shape.deleted):
        return "deleted"
    if any(rule_holds(meta, r, authors) for r in shape.private):
        return "private_account"
    if any(rule_holds(meta, r, authors) for r in shape.closed):
        return "non_public"
    if shape.name == "activitypub" and not any(rule_holds(meta, r) for r in shape.public_if):
        to = [v for p in ("to", "cc") for v in values(meta, p)]
        recipients = [x for v in to for x in (v if isinstance(v, list) else [v]) if isinstance(x, str)]
        one = len(recipients) == 1 and not recipients[0].endswith("/followers")
        return "direct_message" if one else "non_public"
    return None


def is_public(meta: dict[str, Any], shape: Shape) -> bool:
    """Whether a record of ``shape`` with no private rule holding is public (no visibility field needed)."""
    return shape.public or any(rule_holds(meta, r) for r in shape.public_if)
