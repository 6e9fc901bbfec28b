"""Privacy flags read as a person means them, and the vocabulary that decides what is not public.

A flag is *set* unless its value is clearly false: ``False``, ``0``, ``None`` and the strings ``false``,
``no``, ``0``, ``off``, ``n``, ``f``, ``""`` (any case, any surrounding space) are false; ``True``, ``1``,
``"yes"``, ``"on"``... are true, and so is anything odd (``"maybe"``, ``2``, a list): a privacy flag that
cannot be read is treated as set (fail closed). Values are compared after :func:`norm_value` (NFKC,
case-folded, ``CamelCase``, spaces, hyphens and dots folded to ``_``), so ``DirectMessage``,
``direct-message`` and ``direct message`` are one value.

What counts as privacy, taken from real exports (the lists are defaults; a policy can extend them):

- **Direct/private messages** (``direct_message``): a truthy ``is_dm``, ``dm``, ``is_direct_message``,
  ``direct_message``, ``is_private_message``; a ``type``/``kind``/``$type``/``event_type``/``message_type``
  /``post_type``/``chat_type`` naming a message (``dm``, ``direct``, ``message``, ``message_create`` and
  ``MessageCreate`` of Twitter/X DM events, Reddit's ``t4``, Bluesky's ``chat.bsky.convo.*``, Telegram's
  chat type ``private``); a DM-only field present (``dm_conversation_id``, ``dm_event_id``,
  ``recipient_id``); a visibility of ``direct``/``dm``.
- **Visibility** (``visibility``, ``audience``, ``privacy`` / ``privacy.value`` of Facebook exports,
  ``scope``, ``subreddit_type``): every one present must be public (``public``,
  ``everyone``, ``open``). Known non-public values (Mastodon ``unlisted``/``private``, Facebook
  ``SELF``/``ALL_FRIENDS``/``CUSTOM``, Reddit ``private``/``restricted``/``employees_only``, ``followers``,
  ``friends``, ``circle``...) drop the post as ``non_public``; values in neither list as
  ``visibility_unknown``; no visibility at all as ``visibility_missing``.
- **Private accounts** (``non_public``): a truthy ``protected`` (Twitter/X), ``locked`` (Mastodon),
  ``is_private``/``private`` (Instagram), at the top of ``meta`` or inside its ``user``/``author``/
  ``account`` object; Bluesky's ``!no-unauthenticated`` self-label.
- **Opt-outs** (``opted_out_author``): a truthy ``opt_out``, ``opted_out``, ``do_not_train``, ``noai``,
  ``ai_opt_out``, ``noindex``, or Mastodon's ``indexable: false`` (the author asked not to be indexed).
- **Deleted** (``deleted``): a truthy ``deleted``/``is_deleted``, or Reddit's ``[deleted]``/``[removed]``
  author or body markers: the author withdrew the post.

Not privacy, kept as they are: Reddit ``over_18`` and ``is_self``, ``possibly_sensitive`` / ``sensitive``
/ ``spoiler_text`` (content warnings), ``reply_settings`` (who may reply to a public post), ``withheld``
and ``quarantine`` (moderation decisions about public posts), ``lang``, ``source``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

_FALSE = {"false", "no", "0", "off", "n", "f", "", "none", "null"}
_TRUE = {"true", "yes", "1", "on", "y", "t"}

DM_FLAGS = (
    "is_dm", "dm", "is_direct_message", "direct_message", "is_private_message", "private_message",
    "one_to_one", "is_one_to_one", "is_im", "is_mpim", "is_group_dm", "is_direct",
)  # fmt: skip
DM_TYPE_KEYS = (
    "type",
    "kind",
    "$type",
    "event_type",
    "message_type",
    "post_type",
    "chat_type",
    "channel_type",
    "channel",
    "conversation_type",
    "thread_type",
)
DM_TYPES = (
    "dm", "direct", "direct_message", "direct_messages", "private_message", "message", "message_create",
    "messagecreate", "dm_event", "t4", "private", "chat", "im", "mpim", "one_to_one", "direct_text_chat",
    "direct_group_text_chat", "group_dm", "personal_chat", "private_chat",
)  # fmt: skip
DM_TYPE_PREFIXES = ("chat_bsky_convo",)  # Bluesky chat records ($type chat.bsky.convo.*)
DM_KEYS = ("dm_conversation_id", "dm_event_id", "recipient_id", "message_create", "recipient", "recipients")
VISIBILITY_KEYS = ("visibility", "audience", "privacy", "scope", "subreddit_type")
PUBLIC_VISIBILITIES = ("public", "everyone", "open", "all")
NON_PUBLIC_VISIBILITIES = (
    "private", "unlisted", "followers", "followers_only", "friends", "all_friends", "friends_of_friends",
    "self", "only_me", "custom", "limited", "mutuals", "circle", "close_friends", "restricted", "protected",
    "hidden", "draft", "employees_only", "gold_restricted", "members_only", "group", "subscribers",
)  # fmt: skip
DM_VISIBILITIES = ("direct", "dm", "direct_message", "message")
PRIVATE_ACCOUNT_FLAGS = ("protected", "is_protected", "locked", "is_private", "private", "private_account")
ACCOUNT_KEYS = ("user", "author", "account", "owner")
OPT_OUT_FLAGS = ("opt_out", "opted_out", "optout", "do_not_train", "noai", "no_ai", "ai_opt_out", "noindex")
OPT_IN_FLAGS = ("indexable",)  # false means the author opted out
DELETED_FLAGS = ("deleted", "is_deleted", "removed")
DELETED_MARKERS = ("[deleted]", "[removed]")
NO_UNAUTHENTICATED = "!no-unauthenticated"


def norm_value(value: Any) -> str:
    """A string value in the comparable form: NFKC, CamelCase split, case-folded, separators to ``_``."""
    return _norm(value) if isinstance(value, str) else _norm_text(value)


@lru_cache(maxsize=65536)
def _norm(value: str) -> str:  # keys and vocabulary values repeat across posts
    return _norm_text(value)


def _norm_text(value: Any) -> str:
    text = unicodedata.normalize("NFKC", str(value)).strip()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    return re.sub(r"[\s.\-/#]+", "_", text.casefold()).strip("_")


def truthy(value: Any) -> bool:
    """Whether a privacy flag is set; anything not clearly false is (see the module docstring)."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        v = unicodedata.normalize("NFKC", value).strip().casefold()
        return v not in _FALSE
    return True


def clearly_true(value: Any) -> bool:
    """Whether a flag is clearly true (for flags whose *false* is the private one, e.g. ``indexable``)."""
    if value is True:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 1
    return isinstance(value, str) and unicodedata.normalize("NFKC", value).strip().casefold() in _TRUE


def norm_keys(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its keys in :func:`norm_value` form (``isDM``, ``IsDirectMessage``, ``opt-out``)."""
    return {norm_value(k) if isinstance(k, str) else k: v for k, v in meta.items()}


def any_flag(meta: dict[str, Any], names: tuple[str, ...] | list[str]) -> bool:
    nmeta = norm_keys(meta)
    return any(truthy(nmeta[n]) for n in names if n in nmeta)


def _accounts(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [meta, *[meta[k] for k in ACCOUNT_KEYS if isinstance(meta.get(k), dict)]]


#: keys (normalised, by prefix) holding someone else's record or account: quoted posts, mentions, replies
FOREIGN_PREFIXES = (
    "quot", "retweet", "reblog", "repost", "embed", "include", "mention", "entit", "facet", "reply", "parent",
    "in_reply", "tag", "original", "shared", "referenced", "replies", "recipient", "participants", "to", "cc",
)  # fmt: skip
_LIST_FLAG_KEYS = ("flags", "labels", "self_labels", "tags", "settings", "preferences", "permissions")


def _own_dicts(meta: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """``meta`` and every object inside it that still speaks for its author (settings, profile, user...),
    never a quoted post, a mention or a reply (:data:`FOREIGN_PREFIXES`)."""
    out = [meta]
    if depth < 4:
        for k, v in meta.items():
            if isinstance(v, dict) and not norm_value(k).startswith(FOREIGN_PREFIXES):
                out.extend(_own_dicts(v, depth + 1))
    return out


def _squash(name: str) -> str:
    return name.replace("_", "")


def is_opted_out(meta: dict[str, Any], extra: tuple[str, ...] = ()) -> bool:
    """Whether the post's own flags say its author opted out: an opt-out key (any case or separator:
    ``optOut``, ``opt-out``, ``OPT_OUT``) set at any depth of the author's own objects
    (``settings.do_not_train``, ``profile.noai``), an opt-out word in a flag list (``flags: ["noai"]``),
    or ``indexable`` not true."""
    names = {_squash(norm_value(n)) for n in (*OPT_OUT_FLAGS, *extra)}
    for m in _own_dicts(meta):
        for k, v in m.items():
            if not isinstance(k, str):
                continue
            nk = norm_value(k)
            if _squash(nk) in names and truthy(v):
                return True
            if nk in OPT_IN_FLAGS and not clearly_true(v):
                return True
            if nk in _LIST_FLAG_KEYS and isinstance(v, list):
                for x in v:
                    x = x.get("val") if isinstance(x, dict) else x
                    if isinstance(x, str) and _squash(norm_value(x)) in names:
                        return True
    return False


def is_direct_message(meta: dict[str, Any], dm_types: tuple[str, ...] = DM_TYPES) -> bool:
    """Whether ``meta`` marks a direct/private message (the fields are listed in the module docstring)."""
    meta = norm_keys(meta)
    if any_flag(meta, DM_FLAGS) or any(k in meta and meta[k] is not None for k in DM_KEYS):
        return True
    for key in DM_TYPE_KEYS:
        v = meta.get(key)
        if isinstance(v, str):
            nv = norm_value(v)
            if nv in dm_types or nv.startswith(DM_TYPE_PREFIXES):
                return True
    return any(isinstance(v, str) and norm_value(v) in DM_VISIBILITIES for v in _visibility_values(meta))


def _visibility_values(meta: dict[str, Any]) -> list[Any]:
    out = []
    for key in VISIBILITY_KEYS:
        if key in meta:
            v = meta[key]
            out.append(v.get("value") if isinstance(v, dict) else v)  # Facebook: privacy: {value: EVERYONE}
    return out


def visibility_reason(
    meta: dict[str, Any], public: tuple[str, ...], non_public: tuple[str, ...]
) -> str | None:
    """``None`` when every visibility field is public, else the drop reason (see the module docstring)."""
    values = _visibility_values(meta)
    if not values:
        return "visibility_missing"
    for v in values:
        nv = norm_value(v) if isinstance(v, str) else None
        if nv in public:
            continue
        return "non_public" if nv in non_public else "visibility_unknown"
    return None


def is_private_account(meta: dict[str, Any]) -> bool:
    """A protected/locked/private account, or Bluesky's "no unauthenticated viewers" self-label."""
    if any(any_flag(m, PRIVATE_ACCOUNT_FLAGS) for m in _accounts(norm_keys(meta))):
        return True
    for key in ("labels", "self_labels"):
        v = meta.get(key)
        if isinstance(v, list) and any(
            (x.get("val") if isinstance(x, dict) else x) == NO_UNAUTHENTICATED for x in v
        ):
            return True
    return False


def is_deleted(meta: dict[str, Any], text: str) -> bool:
    """Deleted or removed by its author or the platform (Reddit's markers included)."""
    if any_flag(meta, DELETED_FLAGS):
        return True
    author = meta.get("author")
    return (isinstance(author, str) and author.strip() in DELETED_MARKERS) or text.strip() in DELETED_MARKERS
