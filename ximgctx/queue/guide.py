"""What the labeling page says beside each task and label: a question per task and a one-sentence definition
per label, so that two labelers read "symbolic" the same way.

The operator gives them in a YAML or JSON file (``ximgctx queue serve|add --definitions FILE``), either a
mapping of its own or the ``definitions:`` key of a task file (``configs/tasks/*.yaml``)::

    definitions:
      meaning:
        question: How do the words relate to the picture?
        labels:
          literal: The words mean what they say, and match the picture's mood.
      intent:                       # the short form: labels only
        joke: Meant to amuse.

The queue keeps them with its tasks (in its database). Tasks and labels without a definition fall back to
:data:`DEFAULT_GUIDES` (ContextBench's tasks: ``objects``, ``meaning``, ``intent``) when the name matches, and
otherwise show the label alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ximgctx._yaml as _yaml
from ximgctx.config import TaskSpec
from ximgctx.errors import ConfigError

__all__ = [
    "DEFAULT_GUIDES",
    "MAX_SENTENCE",
    "TaskGuide",
    "guides_for",
    "load_definitions",
    "parse_definitions",
]

MAX_SENTENCE = 300  # characters of one question or definition (the page shows them in one or two lines)
_MAX_BYTES = 1 << 20  # a definitions file larger than this is refused before reading


@dataclass
class TaskGuide:
    """The page's help for one task: the question it asks and a definition per label (both optional)."""

    question: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "labels": dict(self.labels)}


#: Definitions of ContextBench's tasks (:mod:`ximgctx.contextbench`), for a queue's task of the same name.
DEFAULT_GUIDES: dict[str, TaskGuide] = {
    "objects": TaskGuide(
        "Which shapes are drawn in the image? Tick every one you see; none if there are none.",
        {
            "circle": "A round shape (a ring or a disc).",
            "square": "A shape with four equal sides and four right angles.",
            "triangle": "A shape with three straight sides.",
            "star": "A shape with five or more points around a centre.",
            "cross": "Two bars crossing each other (+ or x).",
            "heart": "The heart shape, as in a love symbol.",
            "arrow": "A line or bar ending in an arrowhead.",
        },
    ),
    "meaning": TaskGuide(
        "How do the words relate to the picture? Read the replies too.",
        {
            "literal": "The words mean what they say and match the picture's mood.",
            "ironic": "The words say the opposite of what the picture shows (cheerful words over a storm).",
            "symbolic": "The picture stands for an idea beyond itself (a heart or star under poetic words).",
        },
    ),
    "intent": TaskGuide(
        "What is the post trying to do? Tick all that apply; none if nothing fits.",
        {
            "joke": "Meant to amuse; the replies take it as a joke.",
            "protest": "Calls people to object, gather or support a cause.",
            "threat": "Warns of or promises harm to someone.",
            "meme": "Made as a meme: a picture with caption bands, meant to be shared.",
        },
    ),
}


def _sentence(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected one sentence (a string), got {type(value).__name__}")
    text = " ".join(value.split())
    if len(text) > MAX_SENTENCE:
        raise ConfigError(
            f"{where}: {len(text)} characters; keep it to one sentence (at most {MAX_SENTENCE})"
        )
    return text


def parse_definitions(data: Any, where: str = "definitions") -> dict[str, TaskGuide]:
    """``{task: {question, labels: {label: sentence}}}`` or ``{task: {label: sentence}}`` (checked)."""
    if isinstance(data, Mapping) and isinstance(data.get("definitions"), Mapping):
        data, where = data["definitions"], f"{where}: definitions"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping task -> definitions, got {type(data).__name__}")
    out: dict[str, TaskGuide] = {}
    for task, spec in data.items():
        here = f"{where}.{task}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{here}: expected a mapping label -> sentence, got {type(spec).__name__}")
        long_form = set(spec) <= {"question", "labels"} and isinstance(spec.get("labels", {}), Mapping)
        question = _sentence(spec.get("question", ""), f"{here}.question") if long_form else ""
        labels = spec.get("labels", {}) if long_form else spec
        out[str(task)] = TaskGuide(question, {str(k): _sentence(v, f"{here}.{k}") for k, v in labels.items()})
    return out


def load_definitions(path: str | os.PathLike[str]) -> dict[str, TaskGuide]:
    """The definitions in a YAML/JSON file (a definitions mapping, or a task file's ``definitions:``)."""
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_BYTES:
            raise ConfigError(f"{p}: a definitions file over {_MAX_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the definitions ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the definitions are not UTF-8 text") from None
    return parse_definitions(_yaml.safe_load(text), str(p))


def guides_for(
    tasks: Iterable[TaskSpec], given: Mapping[str, TaskGuide] | None = None
) -> dict[str, TaskGuide]:
    """One guide per task: the operator's definitions first, then the built-in ones, label by label (only
    labels the task has)."""
    out = {}
    for t in tasks:
        mine, builtin = (given or {}).get(t.name), DEFAULT_GUIDES.get(t.name)
        question = (mine.question if mine else "") or (builtin.question if builtin else "")
        labels = {}
        for label in t.labels:
            text = (mine.labels.get(label) if mine else None) or (
                builtin.labels.get(label) if builtin else None
            )
            if text:
                labels[label] = text
        out[t.name] = TaskGuide(question, labels)
    return out
