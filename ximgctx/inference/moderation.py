"""Moderation decisions with explanations, shaped like an OpenAI moderation result.

For each post the :class:`Moderator` returns::

    {"id": "p17",
     "flagged": true,                                  # decision at or above the policy's flag_on
     "categories": {"threat": true},                   # per category: its decision at or above flag_on
     "category_scores": {"threat": 0.93},              # per category: the policy's reduce over label scores
     "category_applied_input_types": {"threat": ["image", "text", "replies"]},   # real inputs it read
     "decision": "block",                              # allow | review | block (most severe category)
     "category_decisions": {"threat": "block"},
     "explanation": {
         "scores_without": {"image": {"threat": 0.41}, "text": {...}, "replies": {...}},
         "decisions_without": {"image": "allow", "text": "block", "replies": "review"},
         "top_replies": [{"index": 2, "text": "he means it", "weight": 0.61}, ...],
         "reply_weights": "attention",
         "memory": {"entry": "p3", "similarity": 0.93, "weight": 0.1}},   # or null: no memory entry moved it
     "unusable_inputs": [],                            # required inputs that could not be used
     "problems": []}

``flagged`` follows OpenAI's meaning (the content violates the policy): it is True exactly when the
decision is at or above the policy's ``flag_on`` (``block`` by default, so a ``review`` decision is not
flagged unless the policy says ``flag_on: review``); route on ``decision`` for the three-way answer.

``scores_without[m]`` is a real forward pass of the model over the same batch with modality ``m``
replaced by its learned null embedding (``model(batch, drop=(m,))``), not an estimate: the gap to
``category_scores`` is how much that modality moved the score. ``top_replies`` are the replies with the
largest ``reply_weights`` (the attention fusion's last-layer attention from its summary token; with the
``concat`` and ``cross`` fusions every reply weighs the same, which ``reply_weights: "uniform"`` says: a
fusion class declares it with ``learns_reply_weights``). ``memory`` names the label-memory entry that moved
the post's scores most, its cosine similarity to the post and the weight it moved the scores by (see
:mod:`ximgctx.inference.memory`: below the near-duplicate similarity that weight moves no score by more than
the memory's ``max_shift``); null when the predictor has no memory or no entry is similar enough.

A post whose required input could not be used (an image that does not decode; see the policy's
``unreadable_input`` and ``required_inputs``) lists it in ``unusable_inputs`` and gets at least the
policy's ``unreadable_input`` decision (``review`` by default), not ``allow`` on what was left. A category
scored from an image-only task has a null score on a post without a usable image (the task abstains).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ximgctx.config import MODALITIES
from ximgctx.data.record import Post
from ximgctx.errors import ConfigError
from ximgctx.inference.predictor import BatchResult, Predictor
from ximgctx.models.context_model import ContextModel
from ximgctx.models.fusion import FUSIONS
from ximgctx.models.modalities import Modalities
from ximgctx.models.policy import Decision, ModerationPolicy, PolicyError, default_policy_path, worst

logger = logging.getLogger(__name__)

__all__ = ["EXPLAIN_MODES", "Explanation", "ModerationResult", "Moderator", "unusable_inputs"]

#: Which posts get an explanation: every post, the posts decided review or block, or none.
EXPLAIN_MODES = ("all", "flagged", "none")
_REPLY_PREVIEW_CHARS = 280


@dataclass
class Explanation:
    """Why a post got its scores."""

    scores_without: dict[str, dict[str, float | None]]  # modality -> category -> score without that modality
    decisions_without: dict[str, str]  # modality -> the post's decision with that modality removed
    top_replies: list[dict[str, Any]]  # [{"index", "text", "weight"}], heaviest first
    reply_weights: str  # "attention" (learned weights) or "uniform" (mean-pooling fusions)
    memory: dict[str, Any] | None = None  # {"entry", "similarity", "weight"}: the entry that moved it most

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores_without": {m: dict(s) for m, s in self.scores_without.items()},
            "decisions_without": dict(self.decisions_without),
            "top_replies": [dict(r) for r in self.top_replies],
            "reply_weights": self.reply_weights,
            "memory": None if self.memory is None else dict(self.memory),
        }


@dataclass
class ModerationResult:
    """One post's moderation result (see the module docstring for the JSON shape)."""

    id: str
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float | None]  # None: the category's task abstained (no usable image)
    category_applied_input_types: dict[str, list[str]]
    decision: Decision
    category_decisions: dict[str, Decision]
    explanation: Explanation | None = None
    problems: list[str] = field(default_factory=list)
    unusable_inputs: list[str] = field(default_factory=list)  # required inputs that could not be used

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flagged": self.flagged,
            "categories": dict(self.categories),
            "category_scores": dict(self.category_scores),
            "category_applied_input_types": {
                k: list(v) for k, v in self.category_applied_input_types.items()
            },
            "decision": self.decision,
            "category_decisions": dict(self.category_decisions),
            "explanation": None if self.explanation is None else self.explanation.to_dict(),
            "unusable_inputs": list(self.unusable_inputs),
            "problems": [str(p) for p in self.problems],
        }


def unusable_inputs(post: Post, present: dict[str, bool], required: list[str]) -> list[str]:
    """The inputs of ``post`` that a policy requires but the model could not use: an image the post gave
    that was not decoded (``present["image"]`` comes from the batch's image mask), and any input of
    ``required`` the post lacks."""
    out = []
    if post.image is not None and not present["image"]:
        out.append("image")
    out += [m for m in required if not present[m] and m not in out]
    return out


class Moderator:
    """Applies a moderation policy to a model's predictions.

    Args:
        predictor: the model: a :class:`Predictor`, or a ``ContextModel`` (wrapped in a default one).
        policy: a :class:`ModerationPolicy`, a path to a policy YAML, or None for the shipped default.
        explain: ``"flagged"`` (default) explains posts decided review or block, at three extra forward
            passes over those posts only; ``"all"`` explains every post; ``"none"`` skips explanations.
    """

    def __init__(
        self,
        predictor: Predictor | ContextModel,
        policy: ModerationPolicy | str | Path | None = None,
        *,
        explain: str = "flagged",
    ) -> None:
        if explain not in EXPLAIN_MODES:
            raise ConfigError(f"explain must be one of {list(EXPLAIN_MODES)}, got {explain!r}")
        source = "policy"
        if policy is None:
            policy = default_policy_path()
        if isinstance(policy, (str, Path)):
            source = str(policy)
            policy = ModerationPolicy.from_yaml(policy)
        if not isinstance(policy, ModerationPolicy):
            raise PolicyError(f"policy must be a ModerationPolicy or a path, got {type(policy).__name__}")
        if isinstance(predictor, ContextModel):
            predictor = Predictor(predictor)
        self.predictor = predictor
        self.policy = policy
        self.explain = explain
        model = predictor.model
        policy.check_tasks(model.config.tasks, source=source)
        self._specs = {t.name: t for t in model.config.tasks}
        self._label_index = {
            name: [self._specs[rule.task].labels.index(x) for x in rule.labels]
            for name, rule in policy.categories.items()
        }
        self._image_tasks = {t.name for t in model.config.tasks if t.source == "image"}
        self._uniform_replies = not FUSIONS[model.config.fusion.kind].learns_reply_weights

    # ------------------------------------------------------------------------------------ scoring
    def category_scores(self, scores: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per category, a (B,) float64 array from per-task (B, C) probabilities (exact widening)."""
        out = {}
        for name, rule in self.policy.categories.items():
            s = (
                scores[rule.task]
                .detach()
                .float()
                .cpu()
                .numpy()
                .astype(np.float64)[:, self._label_index[name]]
            )
            out[name] = rule.reduce_scores(s)
        return out

    def _applied(self, present: dict[str, bool]) -> dict[str, list[str]]:
        out = {}
        for name, rule in self.policy.categories.items():
            reads = ("image",) if self._specs[rule.task].source == "image" else MODALITIES
            out[name] = [m for m in reads if present[m]]
        return out

    def _row_scores(self, cat: dict[str, np.ndarray], row: int, has_image: bool) -> dict[str, float | None]:
        """One post's category scores; None for a category whose task reads an image the post lacks."""
        return {
            name: None
            if not has_image and self.policy.categories[name].task in self._image_tasks
            else float(v[row])
            for name, v in cat.items()
        }

    def _explain(self, result: BatchResult, index: list[int]) -> dict[int, Explanation]:
        """Explanations for posts ``index`` of the batch: three forward passes with a modality dropped."""
        if not index:
            return {}
        batch = result.batch if len(index) == len(result.posts) else result.batch.select(index)
        has_image = batch.image_mask.cpu().tolist()  # (n,)
        without: dict[str, dict[str, np.ndarray]] = {}
        for m in MODALITIES:
            out = self.predictor.forward(batch, Modalities.without(m))
            without[m] = self.category_scores(self.predictor.scores(out))  # category -> (n,)
        weights = result.output.reply_weights.float().cpu().numpy()  # (B, K)
        n_top = self.policy.explain_replies
        explanations = {}
        for row, i in enumerate(index):
            post = result.posts[i]
            w = weights[i]
            order = [int(j) for j in np.argsort(-w, kind="stable") if w[j] > 0][:n_top]
            top = [
                {"index": j, "text": post.replies[j].text[:_REPLY_PREVIEW_CHARS], "weight": float(w[j])}
                for j in order
            ]
            scores_without = {
                m: self._row_scores(without[m], row, bool(has_image[row]) and m != "image")
                for m in MODALITIES
            }
            explanations[i] = Explanation(
                scores_without=scores_without,
                decisions_without={m: self.policy.decide(scores_without[m])[0] for m in MODALITIES},
                top_replies=top,
                reply_weights="uniform" if self._uniform_replies else "attention",
                memory=None if result.memory_effects is None else result.memory_effects[i],
            )
        return explanations

    def results(self, result: BatchResult) -> list[ModerationResult]:
        """Moderation results for one batch the predictor ran."""
        cat = self.category_scores(result.scores)
        present = {m: result.output.embeddings.present[m].cpu().tolist() for m in MODALITIES}
        present["image"] = result.batch.image_mask.cpu().tolist()  # a usable image was decoded
        rows = []
        for i, post in enumerate(result.posts):
            has = {m: bool(present[m][i]) for m in MODALITIES}
            scores = self._row_scores(cat, i, has["image"])
            decision, per = self.policy.decide(scores)
            unusable = unusable_inputs(post, has, self.policy.required_inputs)
            if unusable:
                decision = worst([decision, self.policy.unreadable_input])
            rows.append((has, scores, decision, per, unusable))
        if self.explain == "all":
            wanted = list(range(len(rows)))
        elif self.explain == "flagged":
            wanted = [i for i, row in enumerate(rows) if row[2] != "allow"]
        else:
            wanted = []
        explanations = self._explain(result, wanted)
        out = []
        for i, (has, scores, decision, per, unusable) in enumerate(rows):
            out.append(
                ModerationResult(
                    id=result.posts[i].id,
                    flagged=self.policy.flags(decision),
                    categories={name: self.policy.flags(d) for name, d in per.items()},
                    category_scores=scores,
                    category_applied_input_types=self._applied(has),
                    decision=decision,
                    category_decisions=per,
                    explanation=explanations.get(i),
                    problems=[str(p) for p in result.problems[i]],
                    unusable_inputs=unusable,
                )
            )
        return out

    def iter_moderate(
        self, posts: Iterable[Post], batch_size: int | None = None
    ) -> Iterator[ModerationResult]:
        """Results one post at a time, in input order."""
        for result in self.predictor.iter_batches(posts, batch_size):
            yield from self.results(result)

    def moderate(self, posts: Iterable[Post], batch_size: int | None = None) -> list[ModerationResult]:
        """One result per post, in input order, whatever is wrong with a post (named in ``problems``)."""
        return list(self.iter_moderate(posts, batch_size))

    def moderation_schema(self) -> Any:
        """The pyarrow schema of :meth:`ModerationResult.to_dict` records for this policy (Parquet output)."""
        import pyarrow as pa

        names = list(self.policy.categories)
        f64 = pa.struct([(c, pa.float64()) for c in names])
        explanation = pa.struct(
            [
                ("scores_without", pa.struct([(m, f64) for m in MODALITIES])),
                ("decisions_without", pa.struct([(m, pa.string()) for m in MODALITIES])),
                (
                    "top_replies",
                    pa.list_(
                        pa.struct([("index", pa.int64()), ("text", pa.string()), ("weight", pa.float64())])
                    ),
                ),
                ("reply_weights", pa.string()),
                (
                    "memory",
                    pa.struct(
                        [("entry", pa.string()), ("similarity", pa.float64()), ("weight", pa.float64())]
                    ),
                ),
            ]
        )
        return pa.schema(
            [
                ("id", pa.string()),
                ("flagged", pa.bool_()),
                ("categories", pa.struct([(c, pa.bool_()) for c in names])),
                ("category_scores", f64),
                ("category_applied_input_types", pa.struct([(c, pa.list_(pa.string())) for c in names])),
                ("decision", pa.string()),
                ("category_decisions", pa.struct([(c, pa.string()) for c in names])),
                ("explanation", explanation),
                ("unusable_inputs", pa.list_(pa.string())),
                ("problems", pa.list_(pa.string())),
            ]
        )
