"""How far one labeler's vote reaches the served answers: N queued posts, one vote each by one labeler, and
the decisions (allow/review/block) of near-duplicates of those posts before and after, as JSON.

Runs against any checkout with the queue (``PYTHONPATH=<checkout> python scripts/loop_one_vote.py``), the
tiny test model of ``tests/_inference_fixtures``, a SQLite queue in a temp folder and a server on 127.0.0.1
(no auth: loopback); ``--labelers 2`` has two labelers agree on every post. Where votes go straight into the
label memory, each vote moves its post; under a rule of k agreeing labelers, one vote moves nothing.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
from pathlib import Path

import httpx

from tests._inference_fixtures import make_posts, model_dir
from tests._queue_fixtures import make_store
from tests._serve_fixtures import running
from ximgctx import Post
from ximgctx.serve import ServeConfig, create_app


def _body(posts: list[Post]) -> dict:
    """One moderation request: the posts' near-duplicates (one more character of text), replies included."""
    inputs = []
    for p in posts:
        url = "data:image/png;base64," + base64.b64encode(Path(str(p.image)).read_bytes()).decode()
        inputs.append(
            [{"type": "text", "text": p.text + "!"}, {"type": "image_url", "image_url": {"url": url}}]
        )
    return inputs


def _moderate(url: str, post: Post) -> dict:
    (parts,) = _body([post])
    r = httpx.post(
        f"{url}/v1/moderations",
        json={"input": parts, "ximgctx": {"replies": [x.text for x in post.replies]}},
        timeout=120,
    )
    r.raise_for_status()
    res = r.json()["results"][0]
    return {"decision": res["decision"], "threat": res["ximgctx"]["category_scores"]["threat"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--posts", type=int, default=20)
    ap.add_argument("--labelers", type=int, default=1, help="agreeing labelers voting on every post")
    args = ap.parse_args()
    pool = make_posts(80, seed=11, folder="one-vote", with_labels=False)
    voted = [p for p in pool if p.image][: args.posts]
    warm = [p for p in pool if p not in voted][:32]
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(str(Path(tmp) / "q.sqlite"), overlap=args.labelers, gold_rate=0.0)
        store.enqueue([Post(p.id, p.image, p.text, p.replies, {}, {"visibility": "public"}) for p in voted])
        tokens = [store.add_labeler(f"labeler{i}") for i in range(args.labelers)]
        app = create_app(
            model_dir(), config=ServeConfig(no_auth=True), queue=store, memory=Path(tmp) / "memory"
        )
        with running(app) as url:
            httpx.post(f"{url}/v1/moderations", json={"input": [p.text for p in warm]}, timeout=120)
            before = {p.id: _moderate(url, p) for p in voted}
            for token in tokens:
                with httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
                ) as c:
                    for _ in voted:
                        item = c.post("/v1/queue/lease").json()["item"]
                        labels = {"intent": ["threat"], "meaning": "literal"}
                        vote = c.post(f"/v1/queue/items/{item['item_id']}/vote", json={"labels": labels})
                        vote.raise_for_status()
            after = {p.id: _moderate(url, p) for p in voted}
        store.close()
    flipped = sum(before[k]["decision"] != after[k]["decision"] for k in before)
    moved = sum(abs(before[k]["threat"] - after[k]["threat"]) > 0.05 for k in before)
    print(
        json.dumps(
            {
                "posts": len(voted),
                "labelers": args.labelers,
                "votes": len(voted) * args.labelers,
                "decisions_flipped": flipped,
                "threat_moved_over_0.05": moved,
                "max_threat_move": round(
                    max(abs(before[k]["threat"] - after[k]["threat"]) for k in before), 4
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
