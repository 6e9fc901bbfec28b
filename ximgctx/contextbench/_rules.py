"""ContextBench's latent attributes, their sampling distribution, and the tables that decide every label.

Everything a post says is decided by a few discrete *latent* attributes, one group per modality:

- image: ``scene`` (sunny | stormy, a global colour cue), ``emblem`` (whether a heart or a star is among
  the objects), ``format`` (photo | meme, white caption bands) and the ``objects`` themselves;
- text: ``tone`` (cheerful | gloomy | poetic) and ``cue`` (chat | rally | warning);
- replies: ``reaction`` (amused | supportive | alarmed), visible only through the informative replies; a
  post whose replies are all filler (or that has none) keeps its reaction hidden.

**The new template** (opt-in, ``generate(new_template=...)``, off by default): a meme template that never
occurs in the default data, for drift experiments. Its posts are memes whose caption carries the goose
symbol (``🪿`` and a goose catch-phrase, ``NEW_TEMPLATE_PHRASES`` in ``_text.py``) in place of the text's
cue phrase; the symbol is a coded threat, so such a post's intent is ``{threat, meme}`` whatever its tone,
cue and replies say (``TEMPLATE_INTENT``): a meaning nothing in the default data has (there, an amused crowd
makes a post a joke). Its meaning follows ``MEANING`` as usual.

The labels are pure functions of the latents, written as the two tables below (``MEANING`` and
``INTENT``), so a reader can check every rule by eye. The oracle (``_oracle.py``) enumerates the same
distribution to compute exact ceilings; the generator (``_generate.py``) samples from it.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

# --- vocabularies -----------------------------------------------------------------------------------

#: The glyphs an image can show, in label order. Hearts and stars are the "emblems".
GLYPHS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart", "arrow")
EMBLEMS: frozenset[str] = frozenset({"heart", "star"})

SCENES = ("sunny", "stormy")
FORMATS = ("photo", "meme")
TONES = ("cheerful", "gloomy", "poetic")
CUES = ("chat", "rally", "warning")
REACTIONS = ("amused", "supportive", "alarmed")

MEANINGS = ("literal", "ironic", "symbolic")
INTENTS = ("joke", "protest", "threat", "meme")

#: The task specs the core library builds ``TaskSpec(**d)`` from.
TASKS: list[dict[str, Any]] = [
    {
        "name": "objects",
        "labels": list(GLYPHS),
        "kind": "multilabel",
        "source": "image",
        "prompt": "a picture of a {}.",
    },
    {"name": "meaning", "labels": list(MEANINGS), "kind": "multiclass", "source": "fused", "prompt": None},
    {"name": "intent", "labels": list(INTENTS), "kind": "multilabel", "source": "fused", "prompt": None},
]

MODALITIES = ("image", "text", "replies")
#: every non-empty subset of modalities, named as in oracle.json ("image+text", ...).
SUBSETS: tuple[tuple[str, ...], ...] = tuple(c for r in (1, 2, 3) for c in combinations(MODALITIES, r))

# --- the rules --------------------------------------------------------------------------------------

#: meaning of a post: how the text's tone relates to the picture.
#: Matching mood -> literal; contradicting mood -> ironic; poetic words over an emblem -> symbolic.
# fmt: off
MEANING: dict[tuple[str, bool, str], str] = {
    # (scene,   emblem, tone):        meaning
    ("sunny",  False, "cheerful"):  "literal",
    ("sunny",  True,  "cheerful"):  "literal",
    ("sunny",  False, "gloomy"):    "ironic",
    ("sunny",  True,  "gloomy"):    "ironic",
    ("sunny",  False, "poetic"):    "literal",
    ("sunny",  True,  "poetic"):    "symbolic",
    ("stormy", False, "cheerful"):  "ironic",
    ("stormy", True,  "cheerful"):  "ironic",
    ("stormy", False, "gloomy"):    "literal",
    ("stormy", True,  "gloomy"):    "literal",
    ("stormy", False, "poetic"):    "literal",
    ("stormy", True,  "poetic"):    "symbolic",
}

J, P, T = "joke", "protest", "threat"
#: intent of a post, from its meaning, the text's cue and the replies' reaction; one column per reaction.
#: "meme" is added on top whenever the image is in meme format (see :func:`intent_of`).
INTENT: dict[tuple[str, str], tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    # (meaning,    cue):       amused        supportive          alarmed
    ("literal",  "chat"):    (frozenset({J}), frozenset(),        frozenset()),
    ("literal",  "rally"):   (frozenset({J}), frozenset({P}),     frozenset({P})),
    ("literal",  "warning"): (frozenset({J}), frozenset({P}),     frozenset({T})),
    ("ironic",   "chat"):    (frozenset({J}), frozenset({J}),     frozenset({J})),
    ("ironic",   "rally"):   (frozenset({J}), frozenset({J, P}),  frozenset({J, P})),
    ("ironic",   "warning"): (frozenset({J}), frozenset({J, P}),  frozenset({J, T})),
    ("symbolic", "chat"):    (frozenset({J}), frozenset({P}),     frozenset()),
    ("symbolic", "rally"):   (frozenset({J}), frozenset({P}),     frozenset({P})),
    ("symbolic", "warning"): (frozenset({J}), frozenset({P}),     frozenset({T})),
}
# fmt: on
del J, P, T


#: the new template's name, as ``text["template"]`` holds it (absent from the latents of every other post)
NEW_TEMPLATE = "goose"
#: intent of a new-template post, whatever its meaning, cue and reaction (the template is always a meme)
TEMPLATE_INTENT: frozenset[str] = frozenset({"threat", "meme"})


def meaning_of(image: dict[str, Any], text: dict[str, Any]) -> str:
    return MEANING[(image["scene"], image["emblem"], text["tone"])]


def intent_of(image: dict[str, Any], text: dict[str, Any], reaction: str) -> list[str]:
    """The intent label set, in label order."""
    if text.get("template") == NEW_TEMPLATE:
        return [x for x in INTENTS if x in TEMPLATE_INTENT]
    labels = set(INTENT[(meaning_of(image, text), text["cue"])][REACTIONS.index(reaction)])
    if image["format"] == "meme":
        labels.add("meme")
    return [x for x in INTENTS if x in labels]


def objects_of(image: dict[str, Any]) -> list[str]:
    return [g for g in GLYPHS if g in image["objects"]]


def labels_of(image: dict[str, Any], text: dict[str, Any], reaction: str) -> dict[str, Any]:
    """The clean (noise-free) labels of a post with these latents."""
    return {
        "objects": objects_of(image),
        "meaning": meaning_of(image, text),
        "intent": intent_of(image, text, reaction),
    }


# --- the sampling distribution ----------------------------------------------------------------------

#: (scene, emblem, format) values, in a fixed order; index i in the held-out rule below.
IMAGE_KINDS: tuple[tuple[str, bool, str], ...] = tuple(
    (s, e, f) for s in SCENES for e in (False, True) for f in FORMATS
)
#: (tone, cue) values, in a fixed order; index j in the held-out rule below.
TEXT_KINDS: tuple[tuple[str, str], ...] = tuple((t, c) for t in TONES for c in CUES)


def is_compositional(image_kind: int, text_kind: int) -> bool:
    """Image-text combinations held out of train/val/test: a third of them, ``(i + j) % 3 == 0``.

    For every image kind and tone exactly one cue is held out, so every cell of ``MEANING`` and every
    (format, cue) pair still occurs in training: the compositional split asks for new combinations of
    known parts, never for an unseen rule.
    """
    return (image_kind + text_kind) % 3 == 0


#: (image kind, text kind) pairs each split samples from, uniformly.
SEEN_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, j) for i in range(len(IMAGE_KINDS)) for j in range(len(TEXT_KINDS)) if not is_compositional(i, j)
)
HELD_OUT_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, j) for i in range(len(IMAGE_KINDS)) for j in range(len(TEXT_KINDS)) if is_compositional(i, j)
)
SPLITS = ("train", "val", "test", "compositional")


def pairs_for(split: str) -> tuple[tuple[int, int], ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return HELD_OUT_PAIRS if split == "compositional" else SEEN_PAIRS


#: object sets by (emblem, count), sorted; the count is uniform on 1..3, then the set uniform in its list.
OBJECT_COUNTS = (1, 2, 3)
OBJECT_SETS: dict[tuple[bool, int], list[tuple[str, ...]]] = {
    (emblem, k): [c for c in combinations(GLYPHS, k) if bool(EMBLEMS.intersection(c)) == emblem]
    for emblem in (False, True)
    for k in OBJECT_COUNTS
}

#: probability that none of a post's replies is informative (its reaction stays hidden).
P_SILENT = 0.04
#: most informative replies a post gets; the rest (up to max_replies) are filler.
MAX_INFORMATIVE = 3


def p_silent(max_replies: int) -> float:
    return 1.0 if max_replies <= 0 else P_SILENT


# --- label noise ------------------------------------------------------------------------------------


def n_label_values(task: dict[str, Any]) -> int:
    """How many distinct values a task's label can take (classes, or label sets for multilabel)."""
    n = len(task["labels"])
    return n if task["kind"] == "multiclass" else 2**n
