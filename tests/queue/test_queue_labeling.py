"""The labeling page's answers beyond labels and what steers labelers: "can't tell" and skip reasons stored
as rows (who, when) and counted in the statistics, progress, scores hidden unless the operator asks,
definitions beside the labels, image tasks left out for a text-only post, and the tie rule on export."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from PIL import Image

from ximgctx.errors import ConfigError, InputError
from ximgctx.queue import QueueError
from ximgctx.queue.guide import DEFAULT_GUIDES, load_definitions
from ximgctx.queue.report import UNITS, export_manifest, queue_stats
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import model_dir
from .._queue_fixtures import make_store, public_posts
from .._serve_fixtures import API_KEY, running

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cant_tell_and_skips_are_rows_counted_in_stats_and_progress(store):
    store.enqueue(public_posts(3))
    ann, bob = (store.labeler_for_token(store.add_labeler(n)) for n in ("ann", "bob"))
    assert store.progress(ann) == {"done": 0, "skipped": 0, "leased": 0, "left": 3}
    first = store.lease(ann)
    assert store.progress(ann) == {"done": 0, "skipped": 0, "leased": 1, "left": 2}
    with pytest.raises(QueueError, match="cant_tell: 'mood' is not a task"):
        store.vote(ann, first.item_id, {"meaning": "literal"}, cant_tell=["mood"])
    with pytest.raises(QueueError, match="give a label or can't tell, not both"):
        store.vote(ann, first.item_id, {"intent": ["joke"]}, cant_tell=["intent"])
    result = store.vote(ann, first.item_id, {"meaning": "ironic"}, "the replies", cant_tell=["intent"])
    assert result.votes == 1 and not result.duplicate
    again = store.vote(ann, first.item_id, {"meaning": "ironic"}, cant_tell=["intent"])
    assert again.duplicate  # a retried request: nothing written twice
    with pytest.raises(QueueError, match="already voted"):
        store.vote(ann, first.item_id, {"meaning": "ironic"})  # the same labels without the can't-tell
    # a whole answer of can't-tell is an answer: the post is done for ann, no label row reaches the loop
    second = store.lease(ann)
    store.vote(ann, second.item_id, {}, cant_tell=["meaning", "intent", "objects"])
    with pytest.raises(QueueError, match="reason: expected one of"):
        store.release(ann, store.lease(ann).item_id, reason="boring")
    third = store.lease(ann)
    assert store.release(ann, third.item_id, reason="language", note="Finnish")
    assert store.lease(ann) is None  # a post skipped with a reason is not offered to them again
    assert store.progress(ann) == {"done": 2, "skipped": 1, "leased": 0, "left": 0}
    # bob skips without a reason: the post comes back to him (the lease is only given back)
    lease = store.lease(bob)
    assert store.release(bob, lease.item_id) and store.lease(bob).item_id == lease.item_id

    rows = store.abstention_rows()
    assert [(r["task"], r["reason"], r["note"]) for r in rows] == [
        ("intent", "cant_tell", "the replies"),
        ("intent", "cant_tell", ""),
        ("meaning", "cant_tell", ""),
        ("objects", "cant_tell", ""),
        (None, "language", "Finnish"),
    ]
    assert all(r["time"] > 0 and len(r["labeler"]) == 16 for r in rows)  # who (a digest) and when
    stats = queue_stats(store, names=store.labeler_names(["Ann", "carol"]))
    assert set(stats["units"]) == set(UNITS)
    assert stats["counts"] == {
        "posts": 3,
        "posts_open": 3,
        "posts_gold": 0,
        "answers": 2,
        "task_votes": 1,
        "cant_tell": 4,
        "skips": 1,
        "labelers": 2,
        "labelers_active": 2,
        "labelers_answering": 1,
    }
    assert stats["throughput"]["answers"] == stats["counts"]["answers"] == 2  # the all-can't-tell one too
    assert stats["cant_tell"] == {"intent": 2, "meaning": 1, "objects": 1}
    assert stats["skips"] == {"language": 1}
    named = {p.get("name"): p for p in stats["labelers"]}
    assert set(named) == {"Ann", None}  # bob's name was not given: he stays a digest
    assert named["Ann"]["answers"] == 2 and named["Ann"]["skips"] == 1


def test_export_follows_the_tie_rule(store, tmp_path):
    store.enqueue(public_posts(2))
    ann, bob = (store.labeler_for_token(store.add_labeler(n)) for n in ("ann", "bob"))
    for who, meaning in ((ann, "literal"), (bob, "ironic")):  # post 0: a 1-1 tie; post 1: agreement
        for _ in range(2):
            lease = store.lease(who)
            tie = lease.post_id == "p0"
            store.vote(who, lease.item_id, {"meaning": meaning if tie else "symbolic"})
    majority = export_manifest(store, tmp_path / "majority.jsonl", method="majority")
    assert majority["posts"] == 1 and majority["unresolved"] == {"posts": 1, "tasks": 1}
    (only,) = [json.loads(x) for x in (tmp_path / "majority.jsonl").read_text().splitlines()]
    assert only["id"] == "p1" and only["labels"] == {"meaning": "symbolic"}
    soft = export_manifest(store, tmp_path / "soft.jsonl", method="soft")
    assert soft["posts"] == 2 and soft["unresolved"] == {"posts": 0, "tasks": 0}
    by_id = {p["id"]: p for p in map(json.loads, (tmp_path / "soft.jsonl").read_text().splitlines())}
    assert by_id["p0"]["labels"]["meaning"] == {"literal": 0.5, "ironic": 0.5, "symbolic": 0.0}


def test_definitions_from_a_task_file_with_built_in_fallbacks(store, tmp_path):
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(
        "dataset: mine\n"
        "tasks: []\n"
        "definitions:\n"
        "  meaning:\n"
        "    question: Is the caption sincere?\n"
        "    labels:\n"
        "      ironic: The caption   means the opposite of its words.\n"
        "  intent: {joke: Said for a laugh.}\n",
        encoding="utf-8",
    )
    store.set_definitions(load_definitions(task_file))
    guides = store.guides()
    assert guides["meaning"].question == "Is the caption sincere?"
    assert guides["meaning"].labels["ironic"] == "The caption means the opposite of its words."
    assert guides["meaning"].labels["symbolic"] == DEFAULT_GUIDES["meaning"].labels["symbolic"]  # fallback
    assert guides["intent"].labels["joke"] == "Said for a laugh."
    assert guides["intent"].question == DEFAULT_GUIDES["intent"].question
    assert set(guides["objects"].labels) == {"circle", "square", "star"}  # only the task's own labels
    bad = tmp_path / "bad.yaml"
    bad.write_text("meaning: {sarcastic: Not a label here.}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"definitions.meaning: unknown labels \['sarcastic'\]"):
        store.set_definitions(load_definitions(bad))
    bad.write_text("meaning: {ironic: " + "x" * 400 + "}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="keep it to one sentence"):
        load_definitions(bad)
    bad.write_text("meaning: {ironic: [1, 2]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"meaning.ironic: expected one sentence"):
        load_definitions(bad)


def _page(url: str, token: str) -> str:
    r = httpx.get(f"{url}/queue", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200
    return r.text


@pytest.mark.parametrize("show", ["never", "always"])
def test_scores_on_the_page_only_when_the_operator_asks(tmp_path, show):
    store = make_store(str(tmp_path / "q.sqlite"), overlap=1, gold_rate=0.0, show_scores=show)
    text_only, with_image = public_posts(2)
    Image.new("RGB", (40, 30), (200, 40, 40)).save(tmp_path / "red.png")
    with_image.image = str(tmp_path / "red.png")
    store.enqueue([text_only, with_image])
    token = store.add_labeler("ann")
    h = {"Authorization": f"Bearer {token}"}
    app = create_app(model_dir(), config=ServeConfig(api_keys=[f"{API_KEY} moderate,admin"]), queue=store)
    with running(app) as url:
        page = _page(url, token)  # the text-only post first
        assert 'data-image="no"' in page and 'data-task="objects"' not in page  # no image: no image task
        assert ('class="score"' in page) is (show == "always")
        assert "The picture stands for an idea beyond itself" in page  # the definition of "symbolic"
        lease = httpx.post(f"{url}/v1/queue/lease", headers=h, timeout=60).json()
        assert (lease["item"]["scores"] is None) is (show == "never")
        assert [t["name"] for t in lease["tasks"]] == ["meaning", "intent"]
        vote = httpx.post(
            f"{url}/v1/queue/items/{lease['item']['item_id']}/vote",
            headers=h,
            json={"labels": {"meaning": "literal"}, "cant_tell": ["intent"]},
            timeout=60,
        )
        assert vote.status_code == 200, vote.text  # accepted without the image task
        assert ("model_scores" in vote.json()) is (show != "never")
        page = _page(url, token)  # the post with an image: its image task is asked
        assert 'data-image="yes"' in page and 'data-task="objects"' in page
        assert re.search(r'id="progress" data-done="1" data-total="2"', page)
        item_id = re.search(r'data-item="(\d+)"', page)[1]
        skip = httpx.post(
            f"{url}/v1/queue/items/{item_id}/release",
            headers=h,
            json={"reason": "image_broken"},
            timeout=60,
        )
        assert skip.json() == {"released": True}
        assert "Nothing to label" in _page(url, token)
    assert [(r["task"], r["reason"]) for r in store.abstention_rows()] == [
        ("intent", "cant_tell"),
        (None, "image_broken"),
    ]
