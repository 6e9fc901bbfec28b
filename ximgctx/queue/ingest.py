"""Posts into queue rows: governed, images decoded under limits and re-encoded, authors as keyed digests."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from ximgctx.data.record import Post, post_from_dict
from ximgctx.governance.identity import author_of

if TYPE_CHECKING:
    from ximgctx.queue.store import QueueStore

__all__ = ["governed_items", "item_post", "stored_image"]

_MAX_SIDE = 1024  # longest side of a stored image (what a labeler needs, and what bounds the database)


def stored_image(source: Any, max_bytes: int) -> bytes:
    """The image as a labeler sees it: decoded safely (:func:`ximgctx.data.images.load_image`), at most
    ``_MAX_SIDE`` pixels a side, re-encoded as JPEG (no EXIF: no GPS position, no hidden payload)."""
    from ximgctx.data.images import ImageLimits, load_image

    im = load_image(source, ImageLimits(max_bytes=max_bytes))
    im.thumbnail((_MAX_SIDE, _MAX_SIDE))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def governed_items(
    store: QueueStore, posts: list[Post], policy: Any
) -> tuple[list[dict[str, Any]], dict[str, int], list[str]]:
    """Rows for :class:`~ximgctx.queue.models.Item` (post, image, author digests), governance's drop
    counts by reason, and the post ids whose image could not be stored (they are queued without one)."""
    from ximgctx.data.images import ImageDecodeError
    from ximgctx.governance import govern

    governed = govern(posts, policy)
    dropped = {k: v for k, v in governed.audit.dropped_posts.items() if v}
    rows, problems = [], []
    for post in governed.posts:
        image = None
        if post.image is not None:
            try:
                image = stored_image(post.image, store.config.max_image_bytes)
            except (ImageDecodeError, OSError) as e:
                problems.append(f"{post.id}: image not stored ({getattr(e, 'reason', None) or e})")
        record = post.to_dict()
        record.pop("image", None)
        record["labels"] = {}  # a labeler answers without seeing anyone's labels
        rows.append(
            {
                "post_id": post.id,
                "post": json.dumps(record, ensure_ascii=False, sort_keys=True),
                "image": image,
                "author": store.author_digest(author_of(post.meta)),  # under any key governance reads
                "reply_authors": json.dumps([store.author_digest(r.author) for r in post.replies]),
            }
        )
    return rows, dropped, problems


def item_post(item: Any) -> Post:
    """The stored governed post of an item (image bytes attached when it has one)."""
    post = post_from_dict(json.loads(item.post))
    post.image = item.image
    return post
