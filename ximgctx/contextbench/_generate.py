"""Sample ContextBench posts and write a dataset folder.

Every post has its own random generator, seeded from ``(seed, split, index)``, so a file depends on
nothing but those three numbers and the options: the same seed writes byte-identical manifests and images,
and a post does not change when the split around it grows. Label noise draws from a second generator per
post, so turning noise on changes labels and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ximgctx.contextbench._oracle as _oracle
import ximgctx.contextbench._render as _render
import ximgctx.contextbench._rules as R
import ximgctx.contextbench._text as _text
from ximgctx.contextbench._readme import readme
from ximgctx.data.io import write_posts
from ximgctx.data.record import Post, Reply
from ximgctx.errors import ConfigError

#: Defaults sized for the quickstart (a tiny CLIP trained from scratch on 2 CPU cores in minutes).
N_TRAIN = 4000
N_VAL = 500
N_TEST = 1000
N_COMPOSITIONAL = 1000
IMAGE_SIZE = 64
MAX_REPLIES = 8

_SPLIT_CODES = {split: code for code, split in enumerate(R.SPLITS)}
#: share of posts whose image carries alt text (``meta["alt_text"]``: scene, format and objects, as a poster
#: writes it for screen readers); contrastive pretraining pairs images with it (``contrastive.texts:
#: alt_text``)
P_ALT_TEXT = 0.7
_N_USERS = 100_000  # synthetic author ids are drawn from u00000..u99999


def _user(rng: np.random.Generator) -> str:
    return f"u{int(rng.integers(_N_USERS)):05d}"


def _noisy(rng: np.random.Generator, task: dict[str, Any], label: Any, eps: float) -> Any:
    """With probability ``eps``, one of the task's other possible values, uniformly (see _oracle)."""
    u = rng.random()
    m = R.n_label_values(task)
    r = int(rng.integers(m - 1))  # drawn always, so the stream does not depend on u
    if u >= eps:
        return label
    names = task["labels"]
    if task["kind"] == "multiclass":
        true = names.index(label)
        return names[r if r < true else r + 1]
    true = sum(1 << names.index(x) for x in label)
    mask = r if r < true else r + 1
    return [x for b, x in enumerate(names) if mask >> b & 1]


def is_new_template(seed: int, split: str, index: int, share: float) -> bool:
    """Whether post ``index`` of ``split`` shows the new template when a ``share`` of posts does: a draw of
    its own stream, so the posts that do not are exactly the default dataset's posts."""
    if share <= 0.0:
        return False
    return bool(np.random.default_rng([seed, _SPLIT_CODES[split], index, 3]).random() < share)


def sample_post(
    seed: int,
    split: str,
    index: int,
    *,
    image_size: int,
    label_noise: float,
    max_replies: int,
    new_template: float = 0.0,
) -> tuple[Post, Any]:
    """One post of ``split`` and its image (not yet written). With probability ``new_template`` it shows
    the new template (``_rules.NEW_TEMPLATE``): a meme whose caption carries the goose symbol in place of
    the cue phrase, labelled by ``_rules.TEMPLATE_INTENT``; every other post is the default one."""
    template = is_new_template(seed, split, index, new_template)
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    pairs = R.pairs_for(split)
    i, j = pairs[int(rng.integers(len(pairs)))]
    scene, emblem, fmt = R.IMAGE_KINDS[i]
    tone, cue = R.TEXT_KINDS[j]
    if template:
        fmt = "meme"  # a meme template
    k = R.OBJECT_COUNTS[int(rng.integers(len(R.OBJECT_COUNTS)))]
    sets = R.OBJECT_SETS[(emblem, k)]
    objects = list(sets[int(rng.integers(len(sets)))])
    reaction = R.REACTIONS[int(rng.integers(len(R.REACTIONS)))]
    if rng.random() < R.p_silent(max_replies):
        n_informative = 0
    else:
        n_informative = int(rng.integers(1, min(R.MAX_INFORMATIVE, max_replies) + 1))
    n_filler = int(rng.integers(0, max_replies - n_informative + 1))

    image = {"scene": scene, "emblem": emblem, "format": fmt, "objects": objects}
    text = {"tone": tone, "cue": cue}
    if template:
        text["template"] = R.NEW_TEMPLATE
    clean = R.labels_of(image, text, reaction)
    noise_rng = np.random.default_rng([seed, _SPLIT_CODES[split], index, 1])
    labels = {t["name"]: _noisy(noise_rng, t, clean[t["name"]], label_noise) for t in R.TASKS}

    post = Post(
        id=f"{split}-{index:06d}",
        image=f"images/{split}/{index:06d}.png",
        text=_text.template_text(rng, tone) if template else _text.post_text(rng, tone, cue),
        replies=[
            Reply(text=t, author=_user(rng))
            for t in _text.reply_texts(rng, reaction, n_informative, n_filler)
        ],
        labels=labels,
        meta={
            "visibility": "public",
            "opt_out": False,
            "author": _user(rng),
            "lang": "en",
            "source": "contextbench",
            "split": split,
            "latent": {
                "image": image,
                "text": text,
                "replies": {"reaction": reaction, "informative": n_informative, "filler": n_filler},
            },
            "clean_labels": clean,
        },
    )
    # alt text from its own stream, so that every other draw (and every earlier dataset) is unchanged
    alt_rng = np.random.default_rng([seed, _SPLIT_CODES[split], index, 2])
    if alt_rng.random() < P_ALT_TEXT:
        post.meta["alt_text"] = _text.alt_text(alt_rng, scene, fmt, objects)
    picture = _render.render(rng, scene=scene, fmt=fmt, objects=objects, size=image_size)
    return post, picture


def _check(name: str, value: Any, low: float, high: float, kind: type[int] | type[float] = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (kind, int)) or not low <= value <= high:
        raise ConfigError(f"{name} must be a {kind.__name__} in [{low}, {high}], got {value!r}")


def write_split(
    out_dir: Path,
    split: str,
    n: int,
    *,
    seed: int,
    image_size: int,
    label_noise: float,
    max_replies: int,
    new_template: float = 0.0,
) -> int:
    """Render and write one split's images and its ``<split>.jsonl``; returns the count."""
    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    posts = []
    for index in range(n):
        post, picture = sample_post(
            seed,
            split,
            index,
            image_size=image_size,
            label_noise=label_noise,
            max_replies=max_replies,
            new_template=new_template,
        )
        assert isinstance(post.image, str)  # sample_post names the image file relative to the dataset
        picture.save(out_dir / post.image, format="PNG", compress_level=1)
        posts.append(post)
    return write_posts(posts, out_dir / f"{split}.jsonl")


@dataclass
class ContextBenchConfig:
    """The ContextBench dataset to generate: the arguments of :func:`generate` (and ``ximgctx synth``'s
    flags)."""

    seed: int = 0  # the same seed writes byte-identical files
    n_train: int = N_TRAIN  # posts in train.jsonl
    n_val: int = N_VAL  # posts in val.jsonl (best checkpoint, calibration)
    n_test: int = N_TEST  # posts in test.jsonl (same distribution as train)
    n_compositional: int = N_COMPOSITIONAL  # posts whose image-text combination never occurs in training
    image_size: int = IMAGE_SIZE  # side of the rendered images, pixels
    # probability that a label is replaced by another value (the oracle accounts for it)
    label_noise: float = 0.0
    max_replies: int = MAX_REPLIES  # at most this many replies per post
    # share of posts showing the new meme template (drift experiments; 0: the default dataset)
    new_template: float = 0.0


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = N_TRAIN,
    n_val: int = N_VAL,
    n_test: int = N_TEST,
    n_compositional: int = N_COMPOSITIONAL,
    image_size: int = IMAGE_SIZE,
    label_noise: float = 0.0,
    max_replies: int = MAX_REPLIES,
    new_template: float = 0.0,
) -> dict[str, Any]:
    """Write a ContextBench dataset to ``out_dir`` and return its oracle.

    Writes ``train.jsonl``, ``val.jsonl``, ``test.jsonl``, ``compositional.jsonl`` (canonical post
    records, image paths relative to ``out_dir``), ``images/<split>/NNNNNN.png``, ``oracle.json`` (exact
    ceilings per task and kept-modality subset) and a ``README.md`` with the rules.

    Args:
        out_dir: the dataset folder; created if missing, files of the same name are overwritten.
        seed: the same seed writes byte-identical files.
        n_train / n_val / n_test: posts per split; these three share one sampling distribution.
        n_compositional: posts whose image-text combination never occurs in the other splits.
        image_size: side of the square images, in pixels.
        label_noise: probability that a post's label for a task is replaced by another value, uniformly.
        max_replies: at most this many replies per post.
        new_template: share of every split's posts that show the new meme template (``_rules.NEW_TEMPLATE``;
            off by default, and the posts that do not show it are the default dataset's). ``oracle.json``
            then adds ``new_template``: the template's exact ceilings.
    """
    _check("seed", seed, 0, 2**63 - 1)
    for name, n in (
        ("n_train", n_train),
        ("n_val", n_val),
        ("n_test", n_test),
        ("n_compositional", n_compositional),
    ):
        _check(name, n, 0, 10**8)
    _check("image_size", image_size, 16, 1024)
    _check("max_replies", max_replies, 0, 64)
    _check("label_noise", label_noise, 0.0, 0.5, float)
    _check("new_template", new_template, 0.0, 1.0, float)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "val": n_val, "test": n_test, "compositional": n_compositional}
    for split, n in sizes.items():
        write_split(
            out,
            split,
            n,
            seed=seed,
            image_size=image_size,
            label_noise=float(label_noise),
            max_replies=max_replies,
            new_template=float(new_template),
        )
    result = _oracle.oracle(
        seed=seed, label_noise=float(label_noise), max_replies=max_replies, new_template=float(new_template)
    )
    result["image_size"] = image_size
    result["splits"] = sizes
    (out / "oracle.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(result), encoding="utf-8")
    return result
