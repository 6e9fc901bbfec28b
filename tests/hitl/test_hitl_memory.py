"""Label memory: a labeled example shifts a near-duplicate toward its label and leaves far posts alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ximgctx import Post, Reply, write_posts
from ximgctx.cli.hitl import main as hitl_main
from ximgctx.hitl import select_for_labeling
from ximgctx.inference import Predictor
from ximgctx.inference.memory import LabelMemory, MemoryConfig, default_memory_dir

from ..helpers import tiny_model, write_image

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _reference(folder: Path, n: int = 32) -> list[Post]:
    """Varied unlabeled posts: the sample of the pool the memory centres its similarities on."""
    rng = np.random.default_rng(0)
    words = [
        "monday",
        "cat",
        "crowd",
        "sign",
        "rain",
        "coffee",
        "train",
        "city",
        "night",
        "friends",
        "game",
        "music",
        "storm",
        "sun",
        "heart",
    ]
    posts = []
    for i in range(n):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        image = write_image(folder / f"ref{i}.png", color) if i % 4 else None
        text = " ".join(rng.choice(words, size=int(rng.integers(0, 6))))
        replies = [Reply(str(rng.choice(words))) for _ in range(int(rng.integers(0, 3)))]
        posts.append(Post(f"ref{i}", image, text, replies))
    return posts


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("memory")
    predictor = Predictor(tiny_model(), device="cpu", batch_size=32)
    target = Post(
        "p0",
        write_image(folder / "p0.png", (200, 30, 30)),
        "when monday hits",
        [Reply("lol", "u1"), Reply("lol", "u2"), Reply("so true")],
    )
    corrected = replace(target, labels={"meaning": "symbolic", "intent": ["threat"]})
    near = replace(target, id="near", text=target.text + "!")  # the same post, one character more
    far = Post("p3", write_image(folder / "p3.png", (30, 30, 200)), "", [Reply("stay safe")])
    reference = _reference(folder)
    return {
        "predictor": predictor,
        "corrected": corrected,
        "near": near,
        "far": far,
        "reference": reference,
        "center": predictor.embed(reference),
    }


def _with(predictor: Predictor, memory: LabelMemory) -> Predictor:
    """The same model, through a predictor that reads ``memory``."""
    return Predictor(predictor.model, device="cpu", batch_size=predictor.batch_size, memory=memory)


def _memory(world: dict, config: MemoryConfig | None = None) -> LabelMemory:
    memory = LabelMemory.for_predictor(world["predictor"], config)
    memory.set_center(world["center"])
    return memory


def test_memory_shifts_a_near_duplicate_and_leaves_a_far_post_unchanged(world: dict) -> None:
    # a person labels p0; "near" is p0 with one more character of text, "far" a different post
    predictor, near, far = world["predictor"], world["near"], world["far"]
    before = {p.id: p for p in predictor.predict([near, far])}
    assert before["near"].tasks["meaning"].labels != ["symbolic"]  # the heads alone say something else

    memory = _memory(world, MemoryConfig(weight=0.8, threshold=0.9, temperature=0.05))
    assert memory.add(predictor, [world["corrected"]]) == 1
    emb = predictor.embed([near, far])
    s_near = memory.neighbours(emb[:1], "meaning")[0][0, 0]
    s_far = memory.neighbours(emb[1:], "meaning")[0][0, 0]
    assert s_near >= 0.9 > s_far, (s_near, s_far)  # the test means what it says

    after = {p.id: p for p in _with(predictor, memory).predict([near, far])}
    b, a = before["near"].tasks, after["near"].tasks
    assert a["meaning"].scores["symbolic"] > b["meaning"].scores["symbolic"] + 0.3
    assert a["meaning"].labels == ["symbolic"]
    assert sum(a["meaning"].scores.values()) == pytest.approx(1.0, abs=1e-5)  # still a distribution
    assert a["intent"].scores["threat"] > b["intent"].scores["threat"] + 0.3
    assert a["intent"].scores["joke"] < b["intent"].scores["joke"]
    assert a["objects"].scores == b["objects"].scores  # no memory entry is labeled for objects
    # the far post: every score bit for bit the same
    for task in ("objects", "meaning", "intent"):
        assert after[far.id].tasks[task].scores == before[far.id].tasks[task].scores
        assert after[far.id].tasks[task].labels == before[far.id].tasks[task].labels

    # the same post, labeled again, moves by exactly `weight`
    exact = _with(predictor, memory).predict([world["corrected"]])[0].tasks["meaning"].scores
    heads = predictor.predict([world["corrected"]])[0].tasks["meaning"].scores
    assert exact["symbolic"] == pytest.approx(0.2 * heads["symbolic"] + 0.8, abs=1e-5)

    # weight 0 turns the memory off (compared batch for batch: token trimming depends on the batch)
    memory.config = replace(memory.config, weight=0.0)
    off = _with(predictor, memory).predict([near, far])[0]
    assert off.tasks["meaning"].scores == before["near"].tasks["meaning"].scores


def test_memory_saves_without_pickle_and_reloads(world: dict, tmp_path: Path) -> None:
    predictor = world["predictor"]
    memory = _memory(world)
    memory.add(predictor, [world["corrected"]])
    folder = memory.save(tmp_path / "mem")
    assert sorted(p.name for p in folder.iterdir()) == [
        "embeddings.safetensors",
        "manifest.json",
        "memory.json",
        "posts.jsonl",
    ]
    loaded = LabelMemory.load(folder)
    assert loaded.ids == memory.ids and loaded.labels == memory.labels
    np.testing.assert_array_equal(loaded.center, memory.center)
    posts = [world["near"], world["far"]]
    a = _with(predictor, memory).predict(posts)
    b = _with(predictor, loaded).predict(posts)
    assert [p.tasks["meaning"].scores for p in a] == [p.tasks["meaning"].scores for p in b]
    # re-embedding after retraining keeps the entries
    assert loaded.refresh(predictor, reference=world["reference"][:8]) == 1
    # a memory built with another model is refused
    loaded.model_digest = "0" * 64
    predictor.model_digest = "1" * 64
    with pytest.raises(ValueError, match="built with model"):
        predictor.memory = loaded
    predictor.model_digest = None
    # relabeling a post replaces its entry; removing forgets it
    assert memory.add(predictor, [replace(world["corrected"], labels={"meaning": "literal"})]) == 1
    assert len(memory) == 1 and memory.labels[0] == {"meaning": "literal"}
    assert memory.remove([world["corrected"].id]) == 1 and len(memory) == 0


def test_selection_reads_the_memory(world: dict) -> None:
    predictor, near, far = world["predictor"], world["near"], world["far"]
    memory = _memory(world)
    memory.add(predictor, [world["corrected"]])
    plain = {
        s.id: s.per_task["meaning"] for s in select_for_labeling(predictor, [near, far], 2, task="meaning")
    }
    with_memory = {
        s.id: s.per_task["meaning"]
        for s in select_for_labeling(_with(predictor, memory), [near, far], 2, task="meaning")
    }
    assert with_memory["near"] < plain["near"]  # a corrected neighbour makes the post less uncertain
    assert with_memory[far.id] == plain[far.id]


def test_cli_memory_add_beside_the_model(world: dict, tmp_path: Path) -> None:
    predictor = world["predictor"]
    model_dir = predictor.model.save_pretrained(tmp_path / "model")
    data = tmp_path / "corrections.jsonl"
    write_posts([world["corrected"], replace(world["far"], id="unlabeled", labels={})], data)
    reference = tmp_path / "reference.jsonl"
    write_posts(world["reference"], reference)
    rc = hitl_main(
        [
            "add",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--reference",
            str(reference),
            "--device",
            "cpu",
            # the fixture's posts are not governed; the refusal is tested in tests/test_purge.py
            "--allow-ungoverned",
        ],
        command="memory",
    )
    assert rc == 0
    folder = default_memory_dir(model_dir)
    assert folder == tmp_path / "model.memory" and (folder / "memory.json").is_file()
    meta = json.loads((folder / "memory.json").read_text())
    assert [e["id"] for e in meta["entries"]] == ["p0"] and meta["model_digest"]
    assert meta["config"] == MemoryConfig().to_dict()
    loaded = Predictor.from_pretrained(model_dir, device="cpu", memory=True)  # finds <model>.memory by itself
    assert len(loaded.memory) == 1
    assert loaded.predict([world["near"]])[0].tasks["meaning"].labels == ["symbolic"]
    # the model folder itself is untouched and still loads
    Predictor.from_pretrained(model_dir, device="cpu")


def test_moderation_reads_the_memory(world: dict) -> None:
    from ximgctx.inference import Moderator

    predictor, near, far = world["predictor"], world["near"], world["far"]
    memory = _memory(world)
    memory.add(predictor, [world["corrected"]])  # labeled intent: threat
    plain = {r.id: r for r in Moderator(predictor, explain="all").moderate([near, far])}
    blended = {r.id: r for r in Moderator(_with(predictor, memory), explain="all").moderate([near, far])}
    threat = [c for c, rule in Moderator(predictor).policy.categories.items() if "threat" in rule.labels]
    assert threat
    assert all(blended["near"].category_scores[c] > plain["near"].category_scores[c] for c in threat)
    assert blended[far.id].category_scores == plain[far.id].category_scores
