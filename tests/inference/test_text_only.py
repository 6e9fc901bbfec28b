"""A batch of posts without images: outputs carry no gradient history, and a search index builds from it."""

from __future__ import annotations

import numpy as np

from ximgctx.data.record import Post
from ximgctx.inference import Predictor, SearchIndex

from .._inference_fixtures import model_dir


def test_text_only_batch_outputs_are_plain_tensors_and_index_builds() -> None:
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    posts = [Post(id=f"t{i}", text=f"nothing to see here, number {i}") for i in range(5)]
    result = predictor.run_batch(posts)
    emb = result.output.embeddings
    # null embeddings stand in for every image and every reply: copies, not views of the parameters
    assert not emb.image.requires_grad and not emb.replies.requires_grad and not emb.text.requires_grad
    assert emb.image.data_ptr() != predictor.model.null_image.data_ptr()
    assert not bool(emb.present["image"].any())

    index = SearchIndex.build(predictor, posts, mode="exact")
    assert len(index) == 5
    assert index.search_text("nothing to see here", k=5) == []  # no image vectors to match
    hits = index.search_text("nothing to see here, number 3", k=5, space="fused")
    assert sorted(h.id for h in hits) == sorted(p.id for p in posts)
    assert all(np.isfinite(h.score) for h in hits)
