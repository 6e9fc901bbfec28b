"""The decode budget: how many image pixels a request, and an API key over time, may make the server decode.

Decoding is the costly part of an image post that its sender controls: a 100 KB PNG of one colour can be
6000x6000 pixels (36 Mpx, seconds of the model thread's time). So before a request reaches the model its
images' sizes are read from their headers (Pillow reads the size without decoding a pixel) and charged:

* a request whose images hold more than ``max_request_pixels`` is refused (400: it can never be served);
* each API key has a token bucket of ``pixel_burst`` pixels refilled at ``pixel_rate`` pixels per second;
  a request over what the key has left is answered at once with 429 and ``Retry-After`` (the seconds until
  the bucket holds enough), never queued to wait: the model thread only ever decodes what was admitted.

Keys do not share a bucket, so one key's large images do not spend another key's budget. A server run with
``--no-auth`` has one caller, and one bucket. ``/metrics`` reports the pixels admitted and refused by key.
"""

from __future__ import annotations

import io
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from ximgctx.errors import InputError
from ximgctx.serve.errors import ServiceError

__all__ = ["PixelBudget", "image_pixels"]


def image_pixels(data: bytes, formats: Iterable[str] | None = None) -> int:
    """Width x height of an encoded image from its header (nothing decoded); 0 when Pillow cannot read the
    header (the decoder then refuses the image without decoding either). ``formats``: the Pillow formats
    tried (default: the decoder's allowlist)."""
    from PIL import Image

    from ximgctx.data.images import ALLOWED_FORMATS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(formats or ALLOWED_FORMATS)) as im:
                width, height = im.size
    except Exception:  # noqa: BLE001 - unreadable, unknown format, or a header past Pillow's bomb limit
        return 0
    return int(width) * int(height)


class PixelBudget:
    """Per-request pixel limit and one token bucket per API key (thread-safe; see the module)."""

    def __init__(
        self,
        *,
        max_request_pixels: int,
        rate: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        on_charge: Callable[[str, str, int], None] | None = None,
        on_level: Callable[[str, float], None] | None = None,
    ) -> None:
        self.max_request_pixels = int(max_request_pixels)
        self.rate = int(rate)
        self.burst = int(burst)
        self.clock = clock
        self.on_charge = on_charge  # (key, "admitted" | "over_request" | "over_rate", pixels)
        self.on_level = on_level  # (key, pixels left in its bucket)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (pixels left, when)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, metrics: Any = None) -> PixelBudget:
        return cls(
            max_request_pixels=config.max_request_pixels,
            rate=config.pixel_rate,
            burst=config.pixel_burst,
            on_charge=metrics.decode_pixels if metrics is not None else None,
            on_level=metrics.pixel_budget_left if metrics is not None else None,
        )

    def charge_images(self, key: str, images: Iterable[Any]) -> None:
        """:meth:`charge` for the pixels of a request's encoded images (entries that are not bytes count
        0)."""
        encoded = [bytes(x) for x in images if isinstance(x, bytes | bytearray)]
        pixels = sum(image_pixels(x) for x in encoded)
        self.charge(key, pixels)

    def charge(self, key: str, pixels: int) -> None:
        """Spend ``pixels`` of ``key``'s budget, or refuse the request (400 over the per-request limit, 429
        with ``Retry-After`` over the key's budget); nothing is spent on a refusal."""
        if pixels <= 0:
            return
        if pixels > self.max_request_pixels:
            self._note(key, "over_request", pixels)
            raise InputError(
                f"images: {pixels} pixels in one request, over the server's limit of "
                f"{self.max_request_pixels} (max_request_pixels); send smaller images"
            )
        if self.rate <= 0:
            self._note(key, "admitted", pixels)
            return
        with self._lock:
            now = self.clock()
            left, then = self._buckets.get(key, (float(self.burst), now))
            left = min(float(self.burst), left + (now - then) * self.rate)
            if pixels > left:
                self._buckets[key] = (left, now)
                wait = math.ceil((pixels - left) / self.rate)
            else:
                left -= pixels
                self._buckets[key] = (left, now)
                wait = 0
        if self.on_level is not None:
            self.on_level(key, left)
        if wait:
            self._note(key, "over_rate", pixels)
            raise ServiceError(
                429,
                f"decode budget exceeded: this request's images hold {pixels} pixels and this API key has "
                f"{int(left)} of its {self.burst} left (refilled at {self.rate} pixels/s); retry in {wait} s",
                "pixels",
                "rate_limit_exceeded",
                headers={"Retry-After": str(wait)},
            )
        self._note(key, "admitted", pixels)

    def _note(self, key: str, outcome: str, pixels: int) -> None:
        if self.on_charge is not None:
            self.on_charge(key, outcome, pixels)
