"""Large images are decoded in a lane of their own, so the model thread never spends seconds on one.

The model thread decodes a post's image inside the batch (the processor), which is right for ordinary
images (a few milliseconds) but lets one 36 Mpx PNG hold every request batched with it for seconds. So an
image whose header declares more than ``large_image_pixels`` is decoded here first, on one thread of its
own (Pillow decodes and resizes without holding the GIL), with the processor's limits, and resized by the
processor's own first transform step (the ``Resize`` of CLIP's preprocessing). The model's copy of the post
then carries that small PIL image, whose ``Resize`` in the batch is a copy, so the scores are exactly those
of the bytes; the request's post keeps its bytes (the queue and the store digest them). Small images take
the old path. An image the lane cannot decode keeps its bytes, and the processor reports the problem in the
result as for any other image. The decode budget (:mod:`ximgctx.serve.budget`) bounds how many pixels reach
this lane per key.
"""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ximgctx.data.record import Post
from ximgctx.serve.budget import image_pixels

__all__ = ["LargeImageLane"]


class LargeImageLane:
    """Decodes the large images of a request off the model thread (see the module)."""

    def __init__(self, processor: Any, threshold: int) -> None:
        self.processor = processor  # a callable returning the model's processor (the server may replace it)
        self.threshold = int(threshold)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ximgctx-large-images")

    async def prepare(self, posts: list[Post], processor: Any = None) -> list[Post]:
        """The posts for the model: a copy of each post with a large image, carrying the decoded, resized
        image; the others as they are (the request's posts keep their bytes, for the queue and the store).
        ``processor``: the processor of the model that will score them (default: the served one's)."""
        if self.threshold <= 0:
            return posts
        loop = asyncio.get_running_loop()
        out = []
        for post in posts:
            data = post.image
            if isinstance(data, bytes) and image_pixels(data) > self.threshold:
                image = await loop.run_in_executor(self.executor, self._decode, data, processor)
                post = dataclasses.replace(post, image=image)
            out.append(post)
        return out

    def _decode(self, data: bytes, processor: Any = None) -> Any:
        from ximgctx.data.images import ImageDecodeError, load_image

        processor = processor if processor is not None else self.processor()
        try:
            image = load_image(data, processor.limits)
        except ImageDecodeError:
            return data  # the processor reports it, as for any image
        steps = getattr(processor.image_transform, "transforms", None)
        if steps and type(steps[0]).__name__ == "Resize":
            image = steps[0](image)  # the transform's own resize; the batch's resize is then a copy
        return image

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
