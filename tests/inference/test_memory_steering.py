"""A label memory that traffic cannot steer: centred on governed reference posts, never on requests; entries a
post does not nearly copy move its scores by at most ``max_shift``; explanations name the entry that moved it.

The attack (issue 22): 40 unrelated posts, 8 junk requests to the server before the first feedback, one
feedback labeling a post ``threat``. On the code that centred a new memory on the server's recent requests
it flipped 8 of the 40 decisions (0 without the junk). The bound these tests hold the memory to: a post
whose decision changes has a near-exact copy in the memory (similarity >= ``near_duplicate``), or a
category score within ``max_shift`` of one of the policy's thresholds; and the junk changes nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from ximgctx import Post, Reply
from ximgctx.cli.hitl import main as hitl_main
from ximgctx.data.io import write_posts
from ximgctx.errors import ConfigError, InputError
from ximgctx.inference import Moderator, Predictor
from ximgctx.inference.memory import LabelMemory, LabelMemoryError, MemoryConfig
from ximgctx.models.policy import ModerationPolicy
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import make_posts, model_dir
from .._queue_fixtures import make_store
from .._serve_fixtures import running

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LABEL = {"intent": ["threat"], "meaning": "literal"}  # the one feedback


@pytest.fixture(scope="module")
def world() -> dict:
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    posts = make_posts(41, seed=7, folder="steer", with_labels=False)
    target, unrelated = posts[0], posts[1:]
    # thresholds inside the tiny model's threat scores, so decisions are a mix of allow, review and block
    threat = np.array([r.category_scores["threat"] for r in Moderator(predictor).moderate(unrelated)])
    review, block = (float(x) for x in np.quantile(threat, [0.35, 0.7]))
    policy = ModerationPolicy.from_dict(
        {
            "version": 1,
            "name": "steering",
            "categories": {
                "threat": {"task": "intent", "labels": ["threat"], "block": block, "review": review}
            },
        }
    )
    base = Moderator(predictor, policy).moderate(unrelated)
    assert {r.decision for r in base} == {"allow", "review", "block"}
    return {
        "predictor": predictor,
        "target": target,
        "unrelated": unrelated,
        "policy": policy,
        "thresholds": (review, block),
        "base": base,
        "reference": make_posts(64, seed=99, folder="steer-reference", with_labels=False),
    }


def _with(world: dict, memory: LabelMemory) -> Predictor:
    return Predictor(world["predictor"].model, device="cpu", memory=memory)


def _near_copies(world: dict, memory: LabelMemory) -> set[str]:
    """Ids of the unrelated posts with an entry at or above the near-duplicate similarity."""
    sims, _ = memory.neighbours(world["predictor"].embed(world["unrelated"]), "intent")
    near = sims.max(axis=1) >= memory.config.near_duplicate
    return {p.id for p, n in zip(world["unrelated"], near, strict=True) if n}


def _at_risk(world: dict, max_shift: float) -> set[str]:
    """Ids of the posts whose threat score lies within ``max_shift`` of a threshold (before any memory)."""
    return {
        r.id
        for r in world["base"]
        if min(abs(r.category_scores["threat"] - t) for t in world["thresholds"]) <= max_shift
    }


def test_the_cap_bounds_every_score_a_post_that_copies_no_entry_gets(world: dict) -> None:
    # threshold 0.5: most unrelated posts are "similar" to the entry, none is a near-exact copy of it
    predictor, unrelated = world["predictor"], world["unrelated"]
    heads = predictor.predict(unrelated)
    for cap, bounded in ((0.05, True), (1.0, False)):
        config = MemoryConfig(threshold=0.5, max_shift=cap)
        memory = LabelMemory.for_predictor(predictor, config, reference=world["reference"])
        assert memory.add(predictor, [replace(world["target"], labels=LABEL)]) == 1
        assert not _near_copies(world, memory)
        after = _with(world, memory).predict(unrelated)
        shifts = [
            abs(a.tasks[t].scores[c] - b.tasks[t].scores[c])
            for a, b in zip(after, heads, strict=True)
            for t in ("meaning", "intent")
            for c in a.tasks[t].scores
        ]
        if bounded:
            assert max(shifts) <= 0.05 + 1e-6
            assert sum(s > 1e-6 for s in shifts) > 10  # the entry did move many posts, a little
        else:
            assert max(shifts) > 0.05  # without the cap the same entry moves them further


def test_junk_requests_before_the_first_feedback_change_no_decision(world: dict, tmp_path: Path) -> None:
    predictor, target, unrelated = world["predictor"], world["target"], world["unrelated"]
    config = MemoryConfig()
    folder = tmp_path / "created"
    LabelMemory.for_predictor(predictor, config, reference=world["reference"]).save(folder)

    def data_url(post: Post) -> str:
        return "data:image/png;base64," + base64.b64encode(Path(post.image).read_bytes()).decode()

    def body(post: Post, suffix: str = "") -> dict:
        parts = [{"type": "text", "text": post.text + suffix}]
        if post.image:
            parts.append({"type": "image_url", "image_url": {"url": data_url(post)}})
        return {"input": parts, "ximgctx": {"id": post.id, "replies": [r.text for r in post.replies]}}

    def attack(junk: int) -> tuple[list[str], dict]:
        memory = tmp_path / f"memory-{junk}"
        LabelMemory.load(folder).save(memory)
        served = Predictor.from_pretrained(model_dir(), device="cpu")  # the server limits its reads
        store = make_store(str(tmp_path / f"loop-{junk}.sqlite"))  # the loop store keeps the feedback row
        app = create_app(
            served, config=ServeConfig(no_auth=True), memory=memory, policy=world["policy"], state=store
        )
        with running(app) as url:
            for i in range(junk):  # varied junk: the kind that moved the old request-derived centre most
                r = httpx.post(f"{url}/v1/moderations", json={"input": "zz " * (i + 1)}, timeout=60)
                assert r.status_code == 200
            feedback = {
                "post": {
                    "id": target.id,
                    "text": target.text,
                    "replies": [r.text for r in target.replies],
                    "meta": {"visibility": "public", "author": "u1"},
                    **({"image": data_url(target)} if target.image else {}),
                },
                "labels": LABEL,
            }
            r = httpx.post(f"{url}/v1/feedback", json=feedback, timeout=60)
            assert r.status_code == 200, r.text
            decisions = []
            for post in unrelated:
                r = httpx.post(f"{url}/v1/moderations", json=body(post), timeout=60)
                decisions.append(r.json()["results"][0]["decision"])
            r = httpx.post(f"{url}/v1/moderations", json=body(target, "!"), timeout=60)
        return decisions, r.json()["results"][0]

    base = [r.decision for r in world["base"]]
    flipped = {}
    for junk in (0, 8):
        decisions, near = attack(junk)
        flipped[junk] = {p.id for p, a, b in zip(unrelated, decisions, base, strict=True) if a != b}
        # the memory still works: a near-exact copy of the labeled post takes the label, and says why
        assert near["decision"] == "block", near
        assert near["explanation"]["memory"]["entry"] == target.id
        assert near["explanation"]["memory"]["similarity"] >= config.near_duplicate
    assert flipped[8] == flipped[0]  # the junk changed nothing
    memory = LabelMemory.load(folder)  # what the server served: the created memory plus the one feedback
    memory.add(predictor, [replace(target, labels=LABEL)])
    bound = _near_copies(world, memory) | _at_risk(world, config.max_shift)
    assert flipped[0] <= bound, (flipped[0], bound)
    assert len(bound) < len(unrelated)  # the bound says something


def test_the_explanation_names_the_entry_its_similarity_and_weight(world: dict) -> None:
    predictor, target = world["predictor"], world["target"]
    config = MemoryConfig(threshold=0.5)
    memory = LabelMemory.for_predictor(predictor, config, reference=world["reference"])
    memory.add(predictor, [replace(target, labels=LABEL)])
    near = replace(target, id="near", text=target.text + "!")  # one character more
    far = Post("far", None, "", [Reply("stay safe")])
    posts = [near, far, *world["unrelated"][:6]]
    sims, _ = memory.neighbours(predictor.embed(posts), "intent")
    plain = {r.id: r for r in Moderator(predictor, world["policy"], explain="all").moderate(posts)}
    got = {r.id: r for r in Moderator(_with(world, memory), world["policy"], explain="all").moderate(posts)}

    effect = got["near"].explanation.memory
    assert effect["entry"] == target.id and effect["similarity"] == pytest.approx(float(sims[0, 0]), abs=1e-5)
    assert effect["similarity"] >= config.near_duplicate
    assert effect["weight"] == pytest.approx(
        config.weight * np.exp((effect["similarity"] - 1) / 0.05), rel=1e-4
    )
    assert got["near"].category_scores["threat"] > plain["near"].category_scores["threat"] + config.max_shift
    assert got["near"].decision == "block"  # the near-exact copy takes the feedback's label
    for row, post in enumerate(posts[1:], start=1):
        effect = got[post.id].explanation.memory
        if sims[row, 0] < config.threshold:
            assert effect is None  # nothing moved it
            assert got[post.id].category_scores == plain[post.id].category_scores
            continue
        assert effect["entry"] == target.id and effect["similarity"] < config.near_duplicate
        moved = abs(got[post.id].category_scores["threat"] - plain[post.id].category_scores["threat"])
        assert 0 < moved <= config.max_shift + 1e-6
    assert any(got[p.id].explanation.memory for p in posts[2:])  # the loop checked some capped posts
    # the JSON and Parquet shapes carry it
    record = got["near"].to_dict()
    assert json.loads(json.dumps(record))["explanation"]["memory"]["entry"] == target.id
    import pyarrow as pa

    schema = Moderator(predictor, world["policy"]).moderation_schema()
    table = pa.Table.from_pylist([got[p.id].to_dict() for p in posts], schema=schema)
    assert table.column("explanation").to_pylist()[0]["memory"]["entry"] == target.id
    assert Moderator(predictor, world["policy"], explain="all").moderate([near])[0].explanation.memory is None


def test_a_memory_is_never_centred_without_governed_reference_posts(world: dict, tmp_path: Path) -> None:
    predictor, target = world["predictor"], world["target"]
    memory = LabelMemory.for_predictor(predictor)
    with pytest.raises(LabelMemoryError, match="--reference"):
        memory.add(predictor, [replace(target, labels=LABEL)])
    assert len(memory) == 0 and memory.center is None
    with pytest.raises(InputError, match="reference is empty"):
        LabelMemory.for_predictor(predictor, reference=[])
    centred = LabelMemory.for_predictor(predictor, MemoryConfig(max_shift=0.02), reference=world["reference"])
    centred.add(predictor, [replace(target, labels=LABEL)])
    with pytest.raises(LabelMemoryError, match="refresh: .*reference"):
        centred.refresh(predictor)
    loaded = LabelMemory.load(centred.save(tmp_path / "mem"))
    assert loaded.reference_size == 64 and loaded.config.max_shift == 0.02
    assert loaded.config.near_duplicate == MemoryConfig().near_duplicate
    with pytest.raises(ConfigError, match="max_shift"):
        MemoryConfig(max_shift=1.5)
    with pytest.raises(ConfigError, match="near_duplicate"):
        MemoryConfig(near_duplicate=2.0)


def test_feedback_to_a_server_whose_memory_has_no_reference_is_refused(world: dict, tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    store = make_store(str(tmp_path / "loop.sqlite"))
    app = create_app(
        Predictor.from_pretrained(model_dir()), config=ServeConfig(no_auth=True), memory=memory, state=store
    )
    with running(app) as url:
        r = httpx.post(
            f"{url}/v1/feedback",
            json={
                "post": {"id": "p", "text": "hi", "meta": {"visibility": "public", "author": "u1"}},
                "labels": LABEL,
            },
            timeout=60,
        )
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_memory_reference"
    assert "--reference" in r.json()["error"]["message"]
    assert not memory.exists()  # nothing was created from the request


def test_cli_memory_add_needs_a_reference_for_a_new_memory(
    world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "labels.jsonl"
    write_posts([replace(world["target"], labels=LABEL)], data)
    memory = tmp_path / "memory"
    argv = [
        "add",
        "--model",
        str(model_dir()),
        "--data",
        str(data),
        "--memory",
        str(memory),
        "--device",
        "cpu",
    ]
    assert hitl_main([*argv, "--allow-ungoverned"], command="memory") == 2
    assert "--reference" in capsys.readouterr().err
    assert not memory.exists()
    reference = tmp_path / "reference.jsonl"
    write_posts(world["reference"], reference)
    argv += ["--reference", str(reference), "--max-shift", "0.02", "--near-duplicate", "0.97"]
    assert hitl_main([*argv, "--allow-ungoverned"], command="memory") == 0
    created = LabelMemory.load(memory)
    assert created.reference_size == len(world["reference"]) and created.ids == [world["target"].id]
    assert (created.config.max_shift, created.config.near_duplicate) == (0.02, 0.97)
