"""ContextBench: determinism, the oracle's targets, an independent recomputation of its ceilings from the
generated posts, the compositional split, record validity, the CLI and label noise."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from ximgctx import contextbench
from ximgctx.cli import main as cli_main
from ximgctx.contextbench import _rules as R
from ximgctx.data.io import load_posts
from ximgctx.data.record import Post

SPLIT_FILES = [f"{s}.jsonl" for s in R.SPLITS]
SUBSET_NAMES = [
    "image",
    "text",
    "replies",
    "image+text",
    "image+replies",
    "text+replies",
    "image+text+replies",
]
# Large enough that a lookup table estimates the Bayes accuracy within a few points (see test 3).
N_BIG = 2500


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _records(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cb_big")
    contextbench.generate(
        out, seed=0, n_train=N_BIG, n_val=0, n_test=N_BIG, n_compositional=N_BIG, image_size=16
    )
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cb_small")
    contextbench.generate(out, seed=3, n_train=40, n_val=10, n_test=20, n_compositional=20, image_size=48)
    return out


# 1. determinism ----------------------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_other_seeds_differ(tmp_path: Path) -> None:
    kw = {"n_train": 25, "n_val": 5, "n_test": 10, "n_compositional": 10, "image_size": 32}
    contextbench.generate(tmp_path / "a", seed=7, **kw)
    contextbench.generate(tmp_path / "b", seed=7, **kw)
    contextbench.generate(tmp_path / "c", seed=8, **kw)
    a, b, c = (_hashes(tmp_path / x) for x in "abc")
    assert len(a) == 4 + 50 + 2  # manifests, images, oracle.json, README.md
    assert a == b
    assert a.keys() == c.keys()
    for name in SPLIT_FILES:
        assert a[name] != c[name]
    images = [k for k in a if k.startswith("images/")]
    assert sum(a[k] != c[k] for k in images) == len(images)


def test_a_post_does_not_depend_on_split_size(small: Path, tmp_path: Path) -> None:
    contextbench.generate(tmp_path, seed=3, n_train=5, n_val=0, n_test=0, n_compositional=0, image_size=48)
    assert (tmp_path / "train.jsonl").read_text().splitlines() == (
        small / "train.jsonl"
    ).read_text().splitlines()[:5]
    assert _hashes(tmp_path / "images") == {
        k: v for k, v in _hashes(small / "images").items() if k.startswith("train/") and int(Path(k).stem) < 5
    }


# 2. the oracle's targets -----------------------------------------------------------------------------


def test_oracle_meets_its_targets_at_zero_noise(small: Path) -> None:
    oracle = json.loads((small / "oracle.json").read_text())
    assert oracle["version"] == 2 and oracle["seed"] == 3 and oracle["label_noise"] == 0.0
    assert oracle["modalities"] == ["image", "text", "replies"]
    for split in ("test", "compositional"):
        for task in ("objects", "meaning", "intent"):
            row = oracle["ceilings"][split][task]
            assert list(row) == SUBSET_NAMES
            assert all(0.0 <= v <= 1.0 for v in row.values())
            # keeping more modalities never hurts the Bayes predictor
            assert row["image+text+replies"] >= max(row.values()) - 1e-12
    test = oracle["ceilings"]["test"]
    assert test["intent"]["image"] <= 0.6 and test["intent"]["text"] <= 0.6
    assert test["intent"]["image+text+replies"] >= 0.95
    assert test["intent"]["image+text"] <= 0.85  # the replies matter
    assert test["meaning"]["image"] <= 0.7 and test["meaning"]["text"] <= 0.7
    assert test["meaning"]["image+text"] == pytest.approx(1.0)
    for split in ("test", "compositional"):
        objects = oracle["ceilings"][split]["objects"]
        assert all(objects[s] == pytest.approx(1.0) for s in SUBSET_NAMES if "image" in s)
        assert all(objects[s] < 0.2 for s in SUBSET_NAMES if "image" not in s)
    # golden values; only posts whose replies are all filler stay ambiguous with every modality kept
    assert test["intent"]["image+text"] == pytest.approx(0.5833333333, abs=1e-9)
    assert test["intent"]["image+text+replies"] == pytest.approx(
        1 - R.P_SILENT * (1 - test["intent"]["image+text"]), abs=1e-9
    )

    assert oracle["checks"] and all(c["ok"] for c in oracle["checks"])
    for c in oracle["checks"]:
        assert c["value"] == test[c["task"]][c["modalities"]]
    assert {t["name"]: t for t in contextbench.TASKS} == oracle["tasks"]


# 3. independent recomputation of the ceilings ------------------------------------------------------


def _key(record: dict, subset: str, task: str) -> tuple:
    """What a predictor keeping ``subset`` sees, read from the record's latents."""
    lat = record["meta"]["latent"]
    key = []
    if "image" in subset:
        img = lat["image"]
        # meaning and intent depend on the objects only through "emblem"; objects need the objects
        key.append(
            tuple(img["objects"]) if task == "objects" else (img["scene"], img["emblem"], img["format"])
        )
    if "text" in subset:
        key.append((lat["text"]["tone"], lat["text"]["cue"]))
    if "replies" in subset:
        key.append(lat["replies"]["reaction"] if lat["replies"]["informative"] > 0 else None)
    return tuple(key)


def _label(record: dict, task: str) -> object:
    value = record["labels"][task]
    return tuple(value) if isinstance(value, list) else value


def _lookup_accuracy(fit: list[dict], score: list[dict], subset: str, task: str) -> float:
    """Exact-match accuracy on ``score`` of the table 'most frequent label per key' fitted on ``fit``.

    A key the fitting sample never saw backs off to fewer modalities (the last one dropped first), down
    to the overall most frequent label.
    """
    names = subset.split("+")
    chain = ["+".join(names[:k]) for k in range(len(names), -1, -1)]  # e.g. image+text, image, ""
    tables = []
    for sub in chain:
        counts: dict[tuple, Counter] = defaultdict(Counter)
        for r in fit:
            counts[_key(r, sub, task)][_label(r, task)] += 1
        tables.append({k: c.most_common(1)[0][0] for k, c in counts.items()})
    hits = 0
    for r in score:
        guess = next(t[k] for sub, t in zip(chain, tables, strict=True) if (k := _key(r, sub, task)) in t)
        hits += guess == _label(r, task)
    return hits / len(score)


def test_lookup_table_on_latents_matches_the_oracle(big: Path) -> None:
    """Fit a lookup table on one sample, score it on another. With n = 2500 scored posts the standard error
    of an accuracy is at most sqrt(0.25 / 2500) = 0.01, and the fitted table loses at most a little where
    two labels are nearly tied, so the estimate must land within 0.035 (3.5 standard errors) of the
    exact value; a wrong rule or distribution shifts a ceiling by far more."""
    oracle = json.loads((big / "oracle.json").read_text())
    train, test, comp = (_records(big, s) for s in ("train", "test", "compositional"))
    half = len(comp) // 2
    for task in ("objects", "meaning", "intent"):
        for subset in SUBSET_NAMES:
            got = _lookup_accuracy(train, test, subset, task)
            assert got == pytest.approx(oracle["ceilings"]["test"][task][subset], abs=0.035), (task, subset)
            # compositional has its own distribution: cross-fit on its two halves
            got = (
                _lookup_accuracy(comp[:half], comp[half:], subset, task)
                + _lookup_accuracy(comp[half:], comp[:half], subset, task)
            ) / 2
            want = oracle["ceilings"]["compositional"][task][subset]
            assert got == pytest.approx(want, abs=0.035), (task, subset)


def test_labels_follow_the_rule_tables(big: Path) -> None:
    for r in _records(big, "test")[:500]:
        lat = r["meta"]["latent"]
        assert r["labels"] == R.labels_of(lat["image"], lat["text"], lat["replies"]["reaction"])
        assert lat["image"]["emblem"] == any(g in R.EMBLEMS for g in lat["image"]["objects"])


# 4. compositional split --------------------------------------------------------------------------


def test_compositional_combinations_never_occur_in_train(big: Path) -> None:
    def combos(split: str) -> set[tuple]:
        out = set()
        for r in _records(big, split):
            img, txt = r["meta"]["latent"]["image"], r["meta"]["latent"]["text"]
            out.add((img["scene"], img["emblem"], img["format"], txt["tone"], txt["cue"]))
        return out

    train, comp = combos("train"), combos("compositional")
    assert len(train) == len(R.SEEN_PAIRS) and len(comp) == len(R.HELD_OUT_PAIRS)
    assert not train & comp
    # ... but every rule is still taught by the training split
    assert {(s, e, t) for s, e, _, t, _ in train} == set(R.MEANING)
    assert {(R.MEANING[(s, e, t)], c) for s, e, _, t, c in train} == set(R.INTENT)


# 5. records load and images decode ---------------------------------------------------------------


def test_every_record_loads_and_every_image_decodes(small: Path) -> None:
    for split in R.SPLITS:
        posts = load_posts(small / f"{split}.jsonl")
        assert all(isinstance(p, Post) for p in posts)
        for p in posts:
            assert p.id.startswith(f"{split}-")
            assert p.meta["split"] == split and p.meta["source"] == "contextbench"
            assert p.meta["visibility"] == "public" and p.meta["opt_out"] is False and p.meta["lang"] == "en"
            assert p.meta["author"].startswith("u") and all(r.author for r in p.replies)
            assert 0 <= len(p.replies) <= 8 and p.text
            assert set(p.labels) == {"objects", "meaning", "intent"}
            with Image.open(p.image) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (48, 48)
                im.load()
    raw = _records(small, "train")[0]
    assert raw["image"] == "images/train/000000.png"


def test_big_manifests_load_strictly(big: Path) -> None:
    assert len(load_posts(big / "compositional.jsonl")) == N_BIG


# 6. the CLI ----------------------------------------------------------------------------------------


def test_cli_writes_all_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    rc = cli_main(
        [
            "synth",
            "--out",
            str(out),
            "--seed",
            "1",
            "--n-train",
            "50",
            "--n-val",
            "10",
            "--n-test",
            "10",
            "--image-size",
            "32",
        ]
    )
    assert rc == 0
    for name in [*SPLIT_FILES, "oracle.json", "README.md"]:
        assert (out / name).is_file(), name
    assert len(_records(out, "train")) == 50 and len(_records(out, "val")) == 10
    assert len(list((out / "images" / "train").glob("*.png"))) == 50
    oracle = json.loads((out / "oracle.json").read_text())
    assert oracle["seed"] == 1 and oracle["image_size"] == 32
    readme = (out / "README.md").read_text()
    assert "| sunny | True | poetic | symbolic |" in readme and "held out" in readme
    assert "intent" in capsys.readouterr().out


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_noise"):
        contextbench.generate(tmp_path, label_noise=0.9, n_train=1)
    with pytest.raises(ValueError, match="image_size"):
        contextbench.generate(tmp_path, image_size=4, n_train=1)
    assert cli_main(["synth", "--out", str(tmp_path), "--n-train", "-1"]) == 2


# 7. label noise ----------------------------------------------------------------------------------


def test_label_noise_changes_labels_and_lowers_ceilings_exactly(big: Path, tmp_path: Path) -> None:
    eps, n = 0.2, 600
    contextbench.generate(
        tmp_path, seed=0, n_train=n, n_val=0, n_test=0, n_compositional=0, image_size=16, label_noise=eps
    )
    noisy, clean = _records(tmp_path, "train"), _records(big, "train")[:n]
    for a, b in zip(noisy, clean, strict=True):  # noise touches the labels and nothing else
        assert a["meta"]["latent"] == b["meta"]["latent"] and a["text"] == b["text"]
        assert a["meta"]["clean_labels"] == b["labels"]
    for task in ("objects", "meaning", "intent"):
        changed = sum(a["labels"][task] != b["labels"][task] for a, b in zip(noisy, clean, strict=True)) / n
        assert changed == pytest.approx(eps, abs=0.06)  # binomial: sd = sqrt(.2 * .8 / 600) = 0.016
    assert _hashes(tmp_path / "images") == {
        k: v for k, v in _hashes(big / "images").items() if k.startswith("train/") and int(Path(k).stem) < n
    }

    oracle = json.loads((tmp_path / "oracle.json").read_text())
    clean_oracle = json.loads((big / "oracle.json").read_text())
    assert oracle["ceilings_at_zero_noise"] == clean_oracle["ceilings"]
    for split in ("test", "compositional"):
        for spec in contextbench.TASKS:
            m = len(spec["labels"]) if spec["kind"] == "multiclass" else 2 ** len(spec["labels"])
            for subset in SUBSET_NAMES:
                c = clean_oracle["ceilings"][split][spec["name"]][subset]
                want = eps / (m - 1) + (1 - eps * m / (m - 1)) * c
                got = oracle["ceilings"][split][spec["name"]][subset]
                assert math.isclose(got, want, abs_tol=1e-9) and got < c
    assert all(c["ok"] for c in oracle["checks"])  # the targets are stated at zero noise


def test_sample_ceilings_are_the_bayes_rule_scored_on_the_posts(big: Path) -> None:
    """Meaning does not depend on the replies, so with replies alone the Bayes rule always answers the most
    probable meaning, 'literal': its realised ceiling is exactly that label's share of the posts. Every
    realised ceiling sits within sampling error of the expected one."""
    oracle = json.loads((big / "oracle.json").read_text())
    for split in ("test", "compositional"):
        posts = load_posts(big / f"{split}.jsonl")
        realised = contextbench.sample_ceilings(posts, split)
        literal = sum(p.labels["meaning"] == "literal" for p in posts) / len(posts)
        assert realised["meaning"]["replies"] == pytest.approx(literal, abs=1e-12)
        for task, by_key in realised.items():
            for key, value in by_key.items():
                expected = oracle["ceilings"][split][task][key]
                se = math.sqrt(max(expected * (1 - expected), 1e-4) / len(posts))
                assert abs(value - expected) <= 4 * se + 1e-9, (split, task, key, value, expected)
    unlabeled = [Post(id="x", meta={"latent": None})]
    assert math.isnan(contextbench.sample_ceilings(unlabeled, "test")["intent"]["image"])


def test_alt_text_describes_scene_format_and_every_object(big: Path) -> None:
    """About 70% of images carry alt text naming their scene, format and objects (what contrastive
    pretraining pairs them with); the rest carry none."""
    from ximgctx.contextbench._generate import P_ALT_TEXT
    from ximgctx.contextbench._text import _ALT_FORMAT, _ALT_SCENE

    posts = load_posts(big / "train.jsonl")
    described = [p for p in posts if "alt_text" in p.meta]
    share = len(described) / len(posts)
    assert abs(share - P_ALT_TEXT) <= 4 * math.sqrt(P_ALT_TEXT * (1 - P_ALT_TEXT) / len(posts))
    for post in described:
        alt, image = post.meta["alt_text"], post.meta["latent"]["image"]
        assert any(w in alt for w in _ALT_SCENE[image["scene"]]), alt
        assert any(w in alt for w in _ALT_FORMAT[image["format"]]), alt
        named = {g for g in R.GLYPHS if f" {g}" in f" {alt}"}
        assert named == set(image["objects"]), (alt, image["objects"])
