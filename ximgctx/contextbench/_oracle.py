"""Exact best-possible accuracy for each task and each subset of modalities.

The oracle enumerates every latent configuration a split can produce, with its exact probability under the
generator's sampling distribution. For a subset of kept modalities, the Bayes-optimal predictor sees only
the latents those modalities reveal (the image reveals its scene, emblem, format and objects; the text its
tone and cue; the replies their reaction, unless none of them is informative) and answers, for each value
it can observe, the label (the label *set* for multilabel tasks: exact match) that is most probable given
that value. Its expected accuracy is the ceiling. No model is trained and nothing is sampled.

Label noise (see :func:`noisy_label_probability`) is folded in exactly: with probability ``eps`` a post's
label for a task is replaced by one of the task's other ``M - 1`` possible values, uniformly. The argmax is
unchanged (``eps < (M-1)/M``) and the ceiling becomes ``eps/(M-1) + (1 - eps*M/(M-1)) * clean_ceiling``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import ximgctx.contextbench._rules as R

#: ContextBench's data version, written to oracle.json: 2 added ``meta["alt_text"]``.
VERSION = 2


def subset_name(subset: tuple[str, ...]) -> str:
    return "+".join(subset)


def latent_cells(
    split: str, max_replies: int, template: bool = False
) -> Iterator[tuple[float, dict[str, Any], dict[str, Any], str, bool]]:
    """Every ``(probability, image, text, reaction, informative)`` a post of ``split`` can have (a post
    showing the new template when ``template``: a meme, its text carrying the template)."""
    pairs = R.pairs_for(split)
    ps = R.p_silent(max_replies)
    for i, j in pairs:
        scene, emblem, fmt = R.IMAGE_KINDS[i]
        tone, cue = R.TEXT_KINDS[j]
        text = {"tone": tone, "cue": cue}
        if template:
            fmt = "meme"
            text["template"] = R.NEW_TEMPLATE
        for k in R.OBJECT_COUNTS:
            sets = R.OBJECT_SETS[(emblem, k)]
            for objects in sets:
                image = {"scene": scene, "emblem": emblem, "format": fmt, "objects": list(objects)}
                p_img = 1.0 / len(pairs) / len(R.OBJECT_COUNTS) / len(sets)
                for reaction in R.REACTIONS:
                    p = p_img / len(R.REACTIONS)
                    if ps < 1.0:
                        yield p * (1.0 - ps), image, text, reaction, True
                    if ps > 0.0:
                        yield p * ps, image, text, reaction, False


def observed(
    subset: tuple[str, ...], image: dict[str, Any], text: dict[str, Any], reaction: str, informative: bool
) -> tuple[Any, ...]:
    """What a predictor that keeps ``subset`` can see of a post: its key in the lookup table."""
    parts: list[Any] = []
    if "image" in subset:
        parts.append((image["scene"], image["emblem"], image["format"], tuple(image["objects"])))
    if "text" in subset:  # a new-template post shows its template in place of its cue
        parts.append((text["tone"], text.get("template") or text["cue"]))
    if "replies" in subset:
        parts.append(reaction if informative else None)
    return tuple(parts)


def _hashable(label: Any) -> Any:
    return tuple(label) if isinstance(label, list) else label


def noisy_label_probability(p_label: float, p_key: float, eps: float, n_values: int) -> float:
    """P(key, observed label = S) given P(key, clean label = S) under the noise model."""
    return (1.0 - eps) * p_label + eps / (n_values - 1) * (p_key - p_label)


def _joint(
    split: str, max_replies: int, template: bool = False
) -> dict[str, dict[tuple[str, ...], dict[Any, dict[Any, float]]]]:
    """``joint[task][subset][key][label] = P(key, clean label)`` over the split's sampling distribution
    (of its new-template posts when ``template``)."""
    joint: dict[str, dict[tuple[str, ...], dict[Any, dict[Any, float]]]] = {
        t["name"]: {s: defaultdict(lambda: defaultdict(float)) for s in R.SUBSETS} for t in R.TASKS
    }
    for p, image, text, reaction, informative in latent_cells(split, max_replies, template):
        labels = R.labels_of(image, text, reaction)
        for subset in R.SUBSETS:
            key = observed(subset, image, text, reaction, informative)
            for task, label in labels.items():
                joint[task][subset][key][_hashable(label)] += p
    return joint


def ceilings(
    split: str, *, label_noise: float = 0.0, max_replies: int = 8, template: bool = False
) -> dict[str, dict[str, float]]:
    """``{task: {subset name: exact ceiling}}`` for one split's sampling distribution; with ``template``,
    for its posts that show the new template (``_rules.NEW_TEMPLATE``)."""
    joint = _joint(split, max_replies, template)

    out: dict[str, dict[str, float]] = {}
    for task in R.TASKS:
        m = R.n_label_values(task)
        out[task["name"]] = {}
        for subset in R.SUBSETS:
            total = 0.0
            for dist in joint[task["name"]][subset].values():
                p_key = sum(dist.values())
                # a label value the clean rules never give this key still has noise mass eps/(M-1)
                best_noisy = noisy_label_probability(max(dist.values()), p_key, label_noise, m)
                if len(dist) < m:
                    best_noisy = max(best_noisy, noisy_label_probability(0.0, p_key, label_noise, m))
                total += best_noisy
            out[task["name"]][subset_name(subset)] = round(total, 12)
    return out


#: the targets ContextBench is built to meet, checked on the zero-noise test ceilings.
TARGETS: list[dict[str, Any]] = [
    {"task": "intent", "modalities": "image", "op": "<=", "limit": 0.6},
    {"task": "intent", "modalities": "text", "op": "<=", "limit": 0.6},
    {"task": "intent", "modalities": "image+text", "op": "<=", "limit": 0.85},
    {"task": "intent", "modalities": "image+text+replies", "op": ">=", "limit": 0.95},
    {"task": "meaning", "modalities": "image", "op": "<=", "limit": 0.7},
    {"task": "meaning", "modalities": "text", "op": "<=", "limit": 0.7},
    {"task": "meaning", "modalities": "image+text", "op": ">=", "limit": 0.95},
    {"task": "objects", "modalities": "image", "op": ">=", "limit": 0.99},
]


def checks(clean_test: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Each target with its value on the zero-noise test ceilings and whether it holds."""
    out = []
    for t in TARGETS:
        value = clean_test[t["task"]][t["modalities"]]
        ok = value <= t["limit"] if t["op"] == "<=" else value >= t["limit"]
        out.append({**t, "split": "test", "label_noise": 0.0, "value": value, "ok": bool(ok)})
    return out


def oracle(*, seed: int, label_noise: float, max_replies: int, new_template: float = 0.0) -> dict[str, Any]:
    """The content of ``oracle.json`` (without split sizes, which the generator adds)."""
    result: dict[str, Any] = {
        "version": VERSION,
        "seed": seed,
        "label_noise": label_noise,
        "max_replies": max_replies,
        "modalities": list(R.MODALITIES),
        "metric": "exact-match accuracy of the Bayes-optimal predictor that sees only the kept modalities",
        "ceilings": {
            split: ceilings(split, label_noise=label_noise, max_replies=max_replies)
            for split in ("test", "compositional")
        },
    }
    clean_test = (
        result["ceilings"]["test"]
        if label_noise == 0.0
        else ceilings("test", label_noise=0.0, max_replies=max_replies)
    )
    if label_noise > 0.0:
        result["ceilings_at_zero_noise"] = {
            "test": clean_test,
            "compositional": ceilings("compositional", label_noise=0.0, max_replies=max_replies),
        }
    result["checks"] = checks(clean_test)
    result["tasks"] = {t["name"]: dict(t) for t in R.TASKS}
    if new_template > 0.0:  # "ceilings" above stay those of the posts without the template
        result["new_template"] = {
            "name": R.NEW_TEMPLATE,
            "share": new_template,
            "intent": [x for x in R.INTENTS if x in R.TEMPLATE_INTENT],
            "ceilings": {
                split: ceilings(split, label_noise=label_noise, max_replies=max_replies, template=True)
                for split in ("test", "compositional")
            },
        }
    return result


def bayes_rules(
    split: str, *, max_replies: int = 8, template: bool = False
) -> dict[str, dict[str, dict[Any, list[Any]]]]:
    """The Bayes-optimal answers behind :func:`ceilings`: ``{task: {subset name: {observed key: labels}}}``,
    every label of maximal probability for that key (more than one where the distribution ties)."""
    joint = _joint(split, max_replies, template)
    out: dict[str, dict[str, dict[Any, list[Any]]]] = {}
    for task, by_subset in joint.items():
        out[task] = {}
        for subset, table in by_subset.items():
            rules = {}
            for key, dist in table.items():
                best = max(dist.values())
                rules[key] = [label for label, q in dist.items() if q >= best - 1e-12]
            out[task][subset_name(subset)] = rules
    return out


def sample_ceilings(posts: Any, split: str, *, max_replies: int = 8) -> dict[str, dict[str, float]]:
    """The ceilings realised on these very posts: ``{task: {subset name: accuracy}}``.

    :func:`ceilings` gives the Bayes-optimal accuracy in expectation; a finite test set scatters around it
    (at 1,000 posts and a ceiling near 0.5, by about 1.6 points). Here the Bayes-optimal rule answers each
    post from the latents its kept modalities reveal (``meta.latent``, written by the generator) and is
    scored against the post's own label; where several labels tie for a key, the score is their average (a
    Bayes-optimal rule may pick any of them). A model is compared to this figure to tell real leakage from
    sampling noise. Posts without latents are left out. A post showing the new template is answered by the
    Bayes rule of the template's posts (the rule of the distribution it comes from, as if the template were
    always seen), the others by the default one.
    """
    rules = bayes_rules(split, max_replies=max_replies)
    template_rules: dict[str, dict[str, dict[Any, list[Any]]]] | None = None
    hits: dict[str, dict[str, list[float]]] = {t: {s: [0.0, 0] for s in rules[t]} for t in rules}
    # per (task, subset, key, new template?): {label: count} of the posts' own labels
    counts: dict[tuple[str, str, Any, bool], dict[Any, int]] = defaultdict(lambda: defaultdict(int))
    for post in posts:
        latent = (post.meta or {}).get("latent")
        if not latent:
            continue
        image, text = latent["image"], latent["text"]
        template = text.get("template") == R.NEW_TEMPLATE
        if template and template_rules is None:
            template_rules = bayes_rules(split, max_replies=max_replies, template=True)
        reaction = latent["replies"]["reaction"]
        informative = int(latent["replies"].get("informative", 0)) > 0 and max_replies > 0
        for subset in R.SUBSETS:
            key = observed(subset, image, text, reaction, informative)
            for task in rules:
                if task not in post.labels or post.labels[task] is None:
                    continue
                counts[(task, subset_name(subset), key, template)][_canonical(task, post.labels[task])] += 1
    for (task, name, key, template), dist in counts.items():
        table = template_rules if template and template_rules is not None else rules
        tied = [_hashable(x) for x in table[task][name].get(key, [])]
        n = sum(dist.values())
        hits[task][name][0] += sum(dist.get(_canonical(task, label), 0) for label in tied) / max(len(tied), 1)
        hits[task][name][1] += n
    return {t: {s: (h / n if n else float("nan")) for s, (h, n) in by.items()} for t, by in hits.items()}


#: task -> label -> its position in the task's label list (a label set's canonical order)
_ORDER = {t["name"]: {v: i for i, v in enumerate(t["labels"])} for t in R.TASKS}


def _canonical(task: str, label: Any) -> Any:
    """A label as the rule tables hold it: a multilabel set as a tuple in the task's label order."""
    if not isinstance(label, (list, tuple)):
        return label
    order = _ORDER[task]
    return tuple(sorted(label, key=lambda v: order.get(v, len(order))))
