"""Text-tower outputs reused across batches: stock replies ("lol", "same", "😂😂😂") are encoded once.

A :class:`TextCache` maps a text's tokens (the exact capped, normalised text as the text tower reads it) to
its unnormalised text embedding, within a namespace naming the model: the encoder object, the state of
its weights (every parameter's storage and version counter, so an in-place update such as a training step
or ``load_state_dict`` starts a new namespace), the dtype and the device. Two models, or one model before
and after its weights change, never share an entry.

Exactness: the cached path encodes every text with
:meth:`~ximgctx.models.encoder.Encoder.encode_text_rowwise`, whose output for a row depends on that row's
tokens alone (fixed call shapes; see :func:`~ximgctx.models.encoder.encode_rowwise`). An embedding computed
in one batch is therefore bit-identical to the one the same text would get in any other batch, and the
scores with the cache equal the scores without it (``TextCache(max_entries=0)``), bit for bit (tested).

Bounds: at most ``max_entries`` entries and ``max_bytes`` bytes, counting each entry's embedding, its key
and a fixed per-entry allowance for the Python objects holding them (:data:`ENTRY_OVERHEAD_BYTES`); the
least recently used entries go first. Within a call, a text repeated in the batch is encoded once.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ximgctx.errors import ConfigError

__all__ = ["ENTRY_OVERHEAD_BYTES", "TextCache", "TextCacheStats"]

#: bytes counted per entry for the dictionary slot, the key object and the tensor object around the data
ENTRY_OVERHEAD_BYTES = 400

_TOKENS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_TOKENS_LOCK = threading.Lock()


def _object_token(obj: Any) -> str:
    """A name for ``obj`` unique for the life of the process (unlike ``id``, never reused)."""
    with _TOKENS_LOCK:
        token = _TOKENS.get(obj)
        if token is None:
            token = _TOKENS[obj] = uuid.uuid4().hex
        return token


def model_namespace(encoder: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> tuple[Any, ...]:
    """What an embedding depends on besides its tokens: the encoder, its weights' state, dtype and device."""
    state = hash(tuple((p.data_ptr(), p._version) for p in encoder.parameters()))
    return (_object_token(encoder), state, str(dtype), str(device))


@dataclass
class TextCacheStats:
    """Counters since the cache was made (or last cleared)."""

    lookups: int = 0  # texts asked for (after deduplication within a call)
    hits: int = 0  # of them found in the cache
    deduplicated: int = 0  # rows that repeated another row of the same call (encoded once)
    encoded: int = 0  # texts run through the text tower
    evicted: int = 0  # entries dropped to stay within the bounds

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class TextCache:
    """A bounded, thread-safe LRU cache of text-tower outputs, keyed by model namespace and tokens.

    Args:
        max_entries: the most embeddings kept (0: keep none; every text is still encoded row-exactly).
        max_bytes: the most bytes kept (embeddings, keys and :data:`ENTRY_OVERHEAD_BYTES` per entry).

    Example:
        >>> cache = TextCache(max_entries=50_000, max_bytes=64 << 20)
        >>> predictor = Predictor(model, text_cache=cache)   # or share one cache between predictors
        >>> cache.info()["hit_rate"]
    """

    def __init__(self, max_entries: int = 50_000, max_bytes: int = 128 << 20) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ConfigError(f"text cache bounds must be >= 0, got {max_entries=} and {max_bytes=}")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.stats = TextCacheStats()
        self._entries: OrderedDict[tuple[Any, bytes], torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held, as counted against ``max_bytes``."""
        return self._bytes

    @staticmethod
    def _entry_bytes(key: tuple[Any, bytes], value: torch.Tensor) -> int:
        return value.numel() * value.element_size() + len(key[1]) + ENTRY_OVERHEAD_BYTES

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.stats = TextCacheStats()

    def info(self) -> dict[str, Any]:
        """Counters and sizes (what ``ximgctx bench inference`` reports)."""
        s = self.stats
        return {
            "entries": len(self._entries),
            "bytes": self._bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "lookups": s.lookups,
            "hits": s.hits,
            "hit_rate": round(s.hit_rate, 4),
            "deduplicated_in_call": s.deduplicated,
            "encoded": s.encoded,
            "evicted": s.evicted,
        }

    # ---------------------------------------------------------------------------------------- use
    def encoder_for(self, encoder: Any, dtype: torch.dtype) -> Any:
        """``tokens (N, T) -> embeddings (N, D)`` for ``encoder``, through this cache: what
        :meth:`ximgctx.ContextModel.forward` takes as ``text_encoder``."""

        def encode(tokens: torch.Tensor) -> torch.Tensor:
            return self.encode(encoder, tokens, dtype)

        return encode

    def encode(self, encoder: Any, tokens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Unnormalised embeddings of ``tokens`` (N, T; 0 = padding), reusing and filling the cache; equal bit
        for bit to ``encoder.encode_text_rowwise(tokens)``."""
        n = tokens.shape[0]
        namespace = model_namespace(encoder, dtype, tokens.device)
        lengths = (tokens != 0).sum(dim=1).tolist()
        rows = tokens.to("cpu", torch.int32).numpy()
        keys = [(namespace, rows[i, : max(int(lengths[i]), 1)].tobytes()) for i in range(n)]
        first: dict[tuple[Any, bytes], int] = {}  # key -> first row holding it
        found: dict[int, torch.Tensor] = {}  # first row -> cached embedding
        with self._lock:
            for i, key in enumerate(keys):
                if key in first:
                    self.stats.deduplicated += 1
                    continue
                first[key] = i
                self.stats.lookups += 1
                hit = self._entries.get(key)
                if hit is not None:
                    self._entries.move_to_end(key)
                    found[i] = hit
                    self.stats.hits += 1
        missing = [i for i in first.values() if i not in found]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            index = torch.tensor(missing, device=tokens.device)
            computed = encoder.encode_text_rowwise(tokens[index])  # (M, D)
            fresh = {i: computed[k] for k, i in enumerate(missing)}
            self._store([(keys[i], computed[k]) for k, i in enumerate(missing)])
        rows_used = [first[key] for key in keys]
        return torch.stack([found[j] if j in found else fresh[j] for j in rows_used])  # (N, D)

    def _store(self, items: list[tuple[tuple[Any, bytes], torch.Tensor]]) -> None:
        if self.max_entries == 0:
            with self._lock:
                self.stats.encoded += len(items)
            return
        with self._lock:
            self.stats.encoded += len(items)
            for key, value in items:
                if key in self._entries:
                    continue
                value = value.detach().clone()  # its own storage: never a view keeping a batch alive
                size = self._entry_bytes(key, value)
                if size > self.max_bytes:
                    continue
                self._entries[key] = value
                self._bytes += size
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    old_key, old = self._entries.popitem(last=False)
                    self._bytes -= self._entry_bytes(old_key, old)
                    self.stats.evicted += 1
