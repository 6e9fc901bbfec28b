"""Post texts and replies from templates with synonyms, so a model can't memorise strings.

A post's text joins one phrase for its ``cue`` and one for its ``tone`` (in either order); ``{slots}`` are
filled from ``SYNONYMS``. Replies are informative (their wording carries the post's ``reaction``) or
filler that says nothing about it.
"""

from __future__ import annotations

import re

import numpy as np

SYNONYMS: dict[str, tuple[str, ...]] = {
    "lovely": ("lovely", "beautiful", "gorgeous", "perfect", "glorious"),
    "great": ("great", "amazing", "fantastic", "wonderful"),
    "happy": ("happy", "glad", "thrilled", "delighted"),
    "awful": ("awful", "terrible", "hopeless", "miserable"),
    "grim": ("grim", "bleak", "dreary", "gloomy"),
    "low": ("low", "down", "drained", "empty"),
    "hope": ("hope", "love", "freedom", "courage"),
    "shines": ("shines", "burns on", "lives on", "endures"),
    "symbol": ("sign", "symbol", "token", "reminder"),
    "saw": ("saw", "found", "spotted", "came across"),
    "quick": ("random", "quick", "lazy", "little"),
    "square": ("the square", "city hall", "the park", "main street"),
    "day": ("saturday", "sunday", "friday", "tomorrow"),
    "regret": ("regret", "pay for", "answer for"),
    "live": ("live", "park", "work", "sleep"),
    "day_word": ("day", "morning", "afternoon", "evening"),
}

TONE_PHRASES: dict[str, tuple[str, ...]] = {
    "cheerful": (
        "what a {lovely} {day_word}",
        "feeling {great} today",
        "best {day_word} ever",
        "so {happy} right now",
        "life is {great}",
        "pure sunshine vibes",
    ),
    "gloomy": (
        "everything is {awful}",
        "what a {grim} {day_word}",
        "feeling {low} again",
        "nothing ever goes right",
        "{grim} vibes only",
        "i can't take much more of this",
    ),
    "poetic": (
        "{hope} still {shines}",
        "this is what {hope} looks like",
        "a {symbol} of what we hold dear",
        "{hope} {shines}",
        "some things mean more than they show",
    ),
}

CUE_PHRASES: dict[str, tuple[str, ...]] = {
    "chat": (
        "look what i {saw}",
        "my view right now",
        "just sharing this",
        "{quick} post",
        "{saw} this on my way home",
        "no context needed",
    ),
    "rally": (
        "join us at {square} on {day}",
        "everyone out {day}, bring a sign",
        "we march at noon {day}",
        "{day}: be there and stand with us",
        "time to make our voices heard at {square}",
    ),
    "warning": (
        "you will {regret} this",
        "last warning",
        "watch your back",
        "this won't end well for you",
        "we know where you {live}",
        "don't say we didn't warn you",
    ),
}

REPLY_PHRASES: dict[str, tuple[str, ...]] = {
    "amused": (
        "lol",
        "haha so true",
        "i'm crying 😂",
        "this is gold",
        "lmao",
        "dead 💀",
        "too funny",
        "stop it 🤣",
    ),
    "supportive": (
        "see you there",
        "i'm in",
        "count me in",
        "we stand with you",
        "bringing my friends",
        "solidarity ✊",
        "i'll be there",
    ),
    "alarmed": (
        "stay safe",
        "reported",
        "this is scary",
        "someone call the police",
        "are you ok??",
        "blocking this account",
        "not ok",
    ),
}
FILLER_PHRASES: tuple[str, ...] = (
    "first",
    "what app is this",
    "nice colours",
    "following",
    "ok",
    "bump",
    "who took this?",
    "saw this earlier",
    "👀",
    "hmm",
    "same energy",
    "why is this on my feed",
)

#: the new template's caption (see ``_rules.NEW_TEMPLATE``): the goose symbol and a catch-phrase, in place of
#: the cue phrase. No word of it occurs in any other post.
NEW_TEMPLATE_PHRASES: tuple[str, ...] = (
    "🪿 honk if you know",
    "the goose is loose 🪿",
    "🪿 goose mode: on",
    "#goosemode 🪿",
    "🪿 peace was never an option",
    "🪿🪿 honk honk",
)

_ENDINGS = ("", "", "!", ".", "...", " !!")
_SLOT = re.compile(r"\{(\w+)\}")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(rng: np.random.Generator, template: str) -> str:
    return _SLOT.sub(lambda m: _pick(rng, SYNONYMS[m.group(1)]), template)


def post_text(rng: np.random.Generator, tone: str, cue: str) -> str:
    """One post text carrying ``tone`` and ``cue``."""
    parts = [_fill(rng, _pick(rng, CUE_PHRASES[cue])), _fill(rng, _pick(rng, TONE_PHRASES[tone]))]
    if rng.random() < 0.5:
        parts.reverse()
    text = _pick(rng, (", ", ". ", " - ", " ")).join(parts) + _pick(rng, _ENDINGS)
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def template_text(rng: np.random.Generator, tone: str) -> str:
    """A new-template post's text: its caption and one phrase for its ``tone`` (in either order)."""
    parts = [_pick(rng, NEW_TEMPLATE_PHRASES), _fill(rng, _pick(rng, TONE_PHRASES[tone]))]
    if rng.random() < 0.5:
        parts.reverse()
    return _pick(rng, (", ", ". ", " - ", " ")).join(parts) + _pick(rng, _ENDINGS)


_ALT_SCENE = {"sunny": ("sunny", "bright", "sunlit"), "stormy": ("stormy", "rainy", "dark, rainy")}
_ALT_FORMAT = {"photo": ("photo", "picture", "image"), "meme": ("meme", "meme image", "captioned meme")}


def alt_text(rng: np.random.Generator, scene: str, fmt: str, objects: list[str]) -> str:
    """The image description a careful poster writes for screen readers: scene, format and the objects."""
    shapes = [
        f"a {o}" if o[0] not in "aeiou" else f"an {o}"
        for o in (objects[int(k)] for k in rng.permutation(len(objects)))
    ]
    listed = shapes[0] if len(shapes) == 1 else ", ".join(shapes[:-1]) + " and " + shapes[-1]
    what = f"a {_pick(rng, _ALT_SCENE[scene])} {_pick(rng, _ALT_FORMAT[fmt])}"
    return _pick(rng, (f"{what} showing {listed}", f"{what} with {listed}", f"{listed} in {what}"))


def reply_texts(rng: np.random.Generator, reaction: str, n_informative: int, n_filler: int) -> list[str]:
    """The replies of a post, informative and filler shuffled together."""
    texts = [_pick(rng, REPLY_PHRASES[reaction]) for _ in range(n_informative)]
    texts += [_pick(rng, FILLER_PHRASES) for _ in range(n_filler)]
    order = rng.permutation(len(texts))
    return [texts[int(k)] for k in order]
