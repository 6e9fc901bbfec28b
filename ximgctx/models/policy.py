"""Moderation policies: which task labels make up each category, and the thresholds that decide.

A policy is a YAML file (the shipped one is ``configs/moderation/default.yaml``)::

    name: default
    explain_replies: 3             # replies named in each explanation (those that weighed most)
    categories:
      threat:                      # category name, as in the output's "categories"
        description: posts that threaten violence
        task: intent               # the model task the score comes from
        labels: [threat]           # the labels of that task that make up the category
        reduce: max                # max over the labels' scores; "sum" only for a multiclass task
        block: 0.9                 # score >= block            -> block
        review: 0.5                # review <= score < block   -> review;  score < review -> allow

Decision rule for one category, with the exact boundaries (tested at the boundary values):

* ``block`` is not null and ``score >= block``                      -> ``"block"``
* otherwise ``review`` is not null and ``score >= review``          -> ``"review"``
* otherwise                                                         -> ``"allow"``

A null ``block`` never blocks automatically (a review-only category); a null ``review`` has no review
band. A post's decision is the most severe decision of any category (block > review > allow).

What clients that read only ``flagged`` see::

    flag_on: block                 # flagged is true for decisions at or above it: block (default) or review

``flagged`` (and each category's boolean in ``categories``) is true for decisions at or above ``flag_on``.
With the default ``block`` a ``review`` decision is not flagged, so a client that reads only ``flagged``
(the OpenAI SDK's users, LiteLLM, LangChain's moderation middleware, openai-guardrails) lets it through;
``flag_on: review`` makes those clients hold review decisions too. ``decision`` always carries the
three-way answer.

Inputs that could not be used::

    unreadable_input: review       # the least severe decision for a post with an unusable required input
    required_inputs: []            # inputs every post must have (image, text, replies)

An input is *required* when the post gives it (an image path that does not decode, is missing or is
refused is unreadable: the model read the post without it) or when ``required_inputs`` names it (a post
without it counts too). Such a post gets at least ``unreadable_input`` (default ``review``; ``allow``
turns the rule off), and its result lists the inputs in ``unusable_inputs``. A category whose task reads
the image only (``source: image``) has no score (null) and decides ``allow`` on a post without a usable
image: there is no evidence to score. Scores are
the model's calibrated probabilities in float32, widened to float64 without rounding, and compared as
they are written in the output, so a threshold copied from an output file reproduces its decision.

A category's score is the ``reduce`` of its labels' scores (:meth:`CategoryRule.reduce_scores`), and a
labeled post's truth for it is whether its human label falls in the category (:func:`category_truth`). This
module sits below inference and evaluation, which both read it: the service decides with these rules, and
a model's scorecard (:mod:`ximgctx.evaluation.scorecard`) scores the same categories the same way.
(``ximgctx.inference.policy`` re-exports it, its name before.)
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml

from ximgctx.config import TaskSpec, config_from_dict
from ximgctx.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from ximgctx.data.record import LabelValue

__all__ = [
    "DECISIONS",
    "FLAG_ON",
    "OPENAI_CATEGORIES",
    "Decision",
    "CategoryRule",
    "ModerationPolicy",
    "PolicyError",
    "category_truth",
    "default_policy_path",
    "worst",
]

_TEXT = ("text",)
_BOTH = ("text", "image")
#: OpenAI's moderation categories and the input types each may report (the SDK's own types say so); a
#: category's ``openai`` list names some of them (:mod:`ximgctx.inference.openai_format` writes them).
OPENAI_CATEGORIES: dict[str, tuple[str, ...]] = {
    "harassment": _TEXT,
    "harassment/threatening": _TEXT,
    "hate": _TEXT,
    "hate/threatening": _TEXT,
    "illicit": _TEXT,
    "illicit/violent": _TEXT,
    "self-harm": _BOTH,
    "self-harm/instructions": _BOTH,
    "self-harm/intent": _BOTH,
    "sexual": _BOTH,
    "sexual/minors": _TEXT,
    "violence": _BOTH,
    "violence/graphic": _BOTH,
}

#: A moderation decision; :data:`DECISIONS` lists them from least to most severe.
Decision = Literal["allow", "review", "block"]
DECISIONS: tuple[Decision, ...] = typing.get_args(Decision)
#: The decisions ``flag_on`` may name (``allow`` would flag every post).
FLAG_ON: tuple[Decision, ...] = ("review", "block")
REDUCES = ("max", "sum")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")  # like OpenAI's "harassment/threatening"
_INPUTS = ("image", "text", "replies")


class PolicyError(ConfigError):
    """A policy is invalid; the message names the file, the field and the bad value."""


def worst(decisions: list[Decision]) -> Decision:
    """The most severe of ``decisions`` (``"allow"`` for none)."""
    return max(decisions, key=DECISIONS.index, default="allow")


def default_policy_path() -> Path:
    """The shipped default policy, package data (``configs/moderation/default.yaml`` links to it)."""
    path = Path(str(resources.files("ximgctx") / "resources" / "moderation_default.yaml"))
    if not path.is_file():  # pragma: no cover - a broken installation
        raise FileNotFoundError(
            f"the default moderation policy is missing from the installed package ({path}); "
            f"pass a policy file with --policy / ModerationPolicy.from_yaml(path)"
        )
    return path


def _threshold(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(f"{where} must be a number in [0, 1] or null, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise PolicyError(f"{where} must be in [0, 1], got {value!r}")
    return float(value)


@dataclass
class CategoryRule:
    """One moderation category: where its score comes from and what decides."""

    name: str  # category name in the output
    task: str  # the model task whose scores make up the category
    labels: list[str]  # labels of ``task`` that belong to the category
    block: float | None = None  # score >= block -> block; None: never blocks automatically
    review: float | None = None  # review <= score < block -> review; None: no review band
    reduce: str = "max"  # how the labels' scores combine: max, or sum (multiclass tasks only)
    description: str = ""  # for people reading the policy
    calibration: dict[str, Any] = field(default_factory=dict)  # how the thresholds were chosen (kept as is)
    openai: list[str] = field(default_factory=list)  # OpenAI moderation categories this one answers

    #: in a policy file a rule's name is its key under ``categories``
    _KEY_FIELD: ClassVar[str] = "name"

    def __post_init__(self) -> None:
        where = f"categories.{self.name}"
        if isinstance(self.labels, str):  # one label may be written without a list
            self.labels = [self.labels]
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PolicyError(f"category names are letters, digits and _ . / -, got {self.name!r}")
        if not isinstance(self.task, str) or not self.task:
            raise PolicyError(f"{where}.task must be a task name, got {self.task!r}")
        if (
            not isinstance(self.labels, list)
            or not self.labels
            or not all(isinstance(x, str) and x for x in self.labels)
        ):
            raise PolicyError(f"{where}.labels must be a non-empty list of label names, got {self.labels!r}")
        dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
        if dup:
            raise PolicyError(f"{where}.labels lists {dup} more than once")
        if self.reduce not in REDUCES:
            raise PolicyError(f"{where}.reduce must be one of {list(REDUCES)}, got {self.reduce!r}")
        self.block = _threshold(self.block, f"{where}.block")
        self.review = _threshold(self.review, f"{where}.review")
        if self.block is not None and self.review is not None and self.review > self.block:
            raise PolicyError(
                f"{where}: review ({self.review!r}) must be <= block ({self.block!r}); "
                f"the review band is [review, block)"
            )
        if not isinstance(self.description, str):
            raise PolicyError(f"{where}.description must be a string, got {self.description!r}")
        if not isinstance(self.calibration, dict):
            raise PolicyError(f"{where}.calibration must be a mapping, got {self.calibration!r}")
        self.openai = [self.openai] if isinstance(self.openai, str) else self.openai
        if not isinstance(self.openai, list) or [c for c in self.openai if c not in OPENAI_CATEGORIES]:
            raise PolicyError(
                f"{where}.openai must list OpenAI moderation category names {list(OPENAI_CATEGORIES)}, "
                f"got {self.openai!r}"
            )

    def decide(self, score: float | None) -> Decision:
        """``"block"``, ``"review"`` or ``"allow"`` for one score (see the module docstring); a category
        with no score (None: its task abstained) decides ``"allow"``."""
        if score is None:
            return "allow"
        if self.block is not None and score >= self.block:
            return "block"
        if self.review is not None and score >= self.review:
            return "review"
        return "allow"

    def reduce_scores(self, label_scores: np.ndarray) -> np.ndarray:
        """The category's scores (N,) from its labels' scores (N, L), in the order of :attr:`labels`: the
        max, or the sum capped at 1 (``reduce: sum``, a multiclass task's probabilities)."""
        import numpy as np

        s = np.asarray(label_scores, dtype=np.float64)
        return s.max(axis=1) if self.reduce == "max" else np.minimum(s.sum(axis=1), 1.0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        out.update(
            {
                "task": self.task,
                "labels": list(self.labels),
                "reduce": self.reduce,
                "block": self.block,
                "review": self.review,
            }
        )
        if self.openai:
            out["openai"] = list(self.openai)
        if self.calibration:
            out["calibration"] = dict(self.calibration)
        return out


@dataclass
class ModerationPolicy:
    """Categories with thresholds; see the module docstring for the file format and decision rule."""

    categories: dict[str, CategoryRule]  # name -> rule, in file order
    name: str = ""  # the policy's name, written into every result's metadata
    description: str = ""
    explain_replies: int = 3  # replies named in each explanation (those that weighed most)
    version: int = 1  # file format version
    unreadable_input: Decision = "review"  # least severe decision for a post with an unusable required input
    required_inputs: list[str] = field(default_factory=list)  # inputs every post must have, given or not
    flag_on: Decision = "block"  # flagged (and categories[c]) is true for decisions at or above it

    def __post_init__(self) -> None:
        if self.flag_on not in FLAG_ON:
            raise PolicyError(f"flag_on must be one of {list(FLAG_ON)}, got {self.flag_on!r}")
        if self.unreadable_input not in DECISIONS:
            raise PolicyError(
                f"unreadable_input must be one of {list(DECISIONS)}, got {self.unreadable_input!r}"
            )
        if not isinstance(self.required_inputs, list) or any(m not in _INPUTS for m in self.required_inputs):
            raise PolicyError(
                f"required_inputs must be a list of inputs among {list(_INPUTS)}, got "
                f"{self.required_inputs!r}"
            )
        if not isinstance(self.categories, dict) or not self.categories:
            raise PolicyError("a policy needs at least one category under 'categories'")
        if (
            isinstance(self.explain_replies, bool)
            or not isinstance(self.explain_replies, int)
            or self.explain_replies < 0
        ):
            raise PolicyError(f"explain_replies must be an integer >= 0, got {self.explain_replies!r}")
        if self.version != 1:
            raise PolicyError(f"version must be 1 (the only policy format so far), got {self.version!r}")

    # ------------------------------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, data: Any, source: str = "policy") -> ModerationPolicy:
        """Build and validate a policy; errors name ``source`` and the dotted field."""
        try:
            if not isinstance(data, dict):
                raise PolicyError(f"a policy is a mapping, got {type(data).__name__}")
            raw = data.get("categories")
            if not isinstance(raw, dict) or not raw:
                raise PolicyError(
                    f"'categories' must be a non-empty mapping of category name -> rule, got {raw!r}"
                )
            for name, rule in raw.items():
                if not isinstance(rule, dict):
                    continue  # config_from_dict names it
                missing = [k for k in ("task", "labels") if k not in rule]
                if missing:
                    raise PolicyError(f"categories.{name}: missing {missing}")
                for key in ("block", "review"):  # the range in the message, before the type check
                    _threshold(rule.get(key), f"categories.{name}.{key}")
            return config_from_dict(cls, data)
        except ConfigError as e:
            raise PolicyError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModerationPolicy:
        """Read and validate a policy file."""
        from ximgctx.config import read_yaml

        try:
            data = read_yaml(path, "policy file")
        except ConfigError as e:
            raise PolicyError(str(e)) from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["explain_replies"] = self.explain_replies
        out["unreadable_input"] = self.unreadable_input
        out["required_inputs"] = list(self.required_inputs)
        out["flag_on"] = self.flag_on
        out["categories"] = {name: rule.to_dict() for name, rule in self.categories.items()}
        return out

    def to_yaml(self, path: str | Path, header: str = "") -> Path:
        """Write the policy (atomically), with ``header`` as leading ``#`` comment lines."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"# {line}".rstrip() for line in header.splitlines()]
        text = "\n".join(lines) + ("\n" if lines else "")
        text += yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path

    def flags(self, decision: Decision) -> bool:
        """Whether ``decision`` is flagged: at or above :attr:`flag_on` (``block`` by default)."""
        return DECISIONS.index(decision) >= DECISIONS.index(self.flag_on)

    # ----------------------------------------------------------------------------------- checking
    def check_tasks(self, tasks: list[TaskSpec], source: str = "policy") -> None:
        """Check every category against a model's tasks; the error names the category and the value."""
        by_name = {t.name: t for t in tasks}
        for name, rule in self.categories.items():
            spec = by_name.get(rule.task)
            if spec is None:
                raise PolicyError(
                    f"{source}: categories.{name}.task is {rule.task!r}, which is not a task of "
                    f"the model; its tasks are {sorted(by_name)}"
                )
            unknown = [x for x in rule.labels if x not in spec.labels]
            if unknown:
                raise PolicyError(
                    f"{source}: categories.{name}.labels has {unknown}, not labels of task "
                    f"{spec.name!r}; its labels are {spec.labels}"
                )
            if rule.reduce == "sum" and spec.kind != "multiclass":
                raise PolicyError(
                    f"{source}: categories.{name}.reduce is 'sum' but task {spec.name!r} is "
                    f"{spec.kind}; independent sigmoid scores do not add up to a probability, "
                    f"use 'max'"
                )

    def decide(self, category_scores: dict[str, float | None]) -> tuple[Decision, dict[str, Decision]]:
        """The post's decision and each category's decision (before the unusable-input rule)."""
        per = {name: self.categories[name].decide(score) for name, score in category_scores.items()}
        return worst(list(per.values())), per


def category_truth(value: LabelValue | None, spec: TaskSpec, labels: list[str]) -> bool | None:
    """Whether a post's human label for ``spec`` falls in the category (one of ``labels``); None when
    unlabeled. A ``{label: probability}`` distribution is in the category when the category's probability,
    summed for a multiclass task and maxed for a multilabel one, is at least 0.5."""
    if value is None:
        return None
    if isinstance(value, str):
        return value in labels
    if isinstance(value, list):
        return any(x in labels for x in value)
    probs = [float(value.get(x, 0.0)) for x in labels]
    if spec.kind == "multiclass":
        total = sum(value.values())
        return total > 0 and sum(probs) / total >= 0.5
    return max(probs) >= 0.5
