"""The encoder interface: what fusion, heads, LoRA, saving and inference read from an image/text backbone.

One subclass per backend, each in its own module: :class:`~ximgctx.models.open_clip_encoder.ClipEncoder`
(open_clip) and :class:`~ximgctx.models.hf_encoder.HFEncoder` (transformers CLIP/SigLIP);
:data:`ximgctx.models.backends.ENCODERS` maps ``EncoderConfig.backend`` to the class. Code above this
layer asks the encoder (``encoder.save_files``, ``encoder.base_identity``), never which backend it is.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ximgctx.config import EncoderConfig
from ximgctx.errors import ArtifactError, XimgctxError

__all__ = [
    "EXACT_ROWS",
    "EXACT_WIDTHS",
    "GROUP_OVERHEAD_TOKENS",
    "Encoder",
    "ModelFolderError",
    "PretrainedWeightsError",
    "encode_by_length",
    "encode_rowwise",
    "exact_width",
    "length_groups",
]


class ModelFolderError(ArtifactError):
    """A saved model folder is incomplete, altered, or not an ximgctx model."""


class PretrainedWeightsError(XimgctxError, RuntimeError):
    """Pretrained weights were asked for but cannot be had."""


#: cost of one extra text-tower call, in padded tokens; groups are split only when that saves more padding
GROUP_OVERHEAD_TOKENS = 256


def portable_ref(value: str | None) -> str | None:
    """How a saved artifact names a model source: a hub id or an open_clip name as it is, a local path by
    its last component only. Saved configs, cards and adapter configs must not carry the saving machine's
    folders (``push_to_hub`` would publish them); the weights a path pointed to are in the artifact and
    named by their SHA-256 in its provenance. (An open_clip ``local-dir:`` architecture is kept: the saved
    model is rebuilt from it, on a machine that has that folder and trusts it.)"""
    if value is None or value.startswith(("local-dir:", "hf-hub:")):
        return value
    local = value.startswith(("/", "./", "../", "~", "file:")) or "\\" in value or Path(value).exists()
    if not local:
        return value
    name = Path(value.removeprefix("file:").rstrip("/\\")).name
    return name or "local"


def length_groups(lengths: list[int], overhead: int | None = None) -> list[list[int]]:
    """Split rows into groups of similar token length, minimising total padded tokens plus a per-call cost.

    Rows are sorted by length and cut into consecutive runs by an exact dynamic program over
    ``sum(overhead + rows_in_group * longest_in_group)``. Returns row indices per group.
    """
    overhead = GROUP_OVERHEAD_TOKENS if overhead is None else overhead
    n = len(lengths)
    if n <= 1:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: lengths[i])
    sorted_len = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = sorted_len[j - 1]
        for i in range(j):
            cost = best[i] + overhead + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def encode_by_length(tokens: torch.Tensor, encode: Any) -> torch.Tensor:
    """``encode`` run on groups of rows of similar real length (:func:`length_groups`), each trimmed by
    ``encode`` to its own longest row; rows come back in their order. (N, T) ids, 0 = padding -> (N, D)."""
    lengths = (tokens != 0).sum(dim=1).clamp(min=1)  # (N,)
    groups = length_groups(lengths.tolist())
    if len(groups) == 1:
        return encode(tokens)
    out: torch.Tensor | None = None
    for rows in groups:
        index = torch.tensor(rows, device=tokens.device)
        part = encode(tokens[index])  # (n_g, D)
        if out is None:
            out = part.new_empty(tokens.shape[0], part.shape[1])
        out = out.index_copy(0, index, part)
    assert out is not None
    return out


#: rows per text-tower call on the row-exact path (:func:`encode_rowwise`); spare rows repeat a real one
EXACT_ROWS = 4
#: token widths the row-exact path runs a row at: the smallest one >= the row's real length
EXACT_WIDTHS = (4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48, 56, 64)


def exact_width(length: int, limit: int) -> int:
    """The width the row-exact path runs a row of ``length`` real tokens at (at most ``limit``)."""
    for width in EXACT_WIDTHS:
        if width >= length:
            return min(width, limit)
    return limit


def encode_rowwise(
    tokens: torch.Tensor,
    encode: Any,
    *,
    limit: int | None = None,
    rows: int = EXACT_ROWS,
    width_of: Any = None,
) -> torch.Tensor:
    """Text embeddings that depend on each row's own tokens only, never on the rows encoded beside it.

    Batched kernels may round a row differently with the shape of the call (a matrix product picks its
    algorithm by row count; padding changes attention's blocking), so an embedding computed with some rows
    would differ in its last bits from the same text computed with others. Here every call has one of a
    few fixed shapes: a row runs at ``width_of(length)`` tokens (default :func:`exact_width`) in a call of
    exactly ``rows`` rows, filled up with copies of a real row. Its embedding is then a function of its
    tokens, which is what makes a cache of embeddings exact (tested). (N, T) ids, 0 = padding -> (N, D).

    Args:
        encode: ``(rows, width) ids -> (rows, D)``, run at the given width without trimming.
        limit: the widest call (default ``T``).
    """
    n, t = tokens.shape
    limit = t if limit is None else limit
    width_of = width_of or (lambda length: exact_width(length, limit))
    lengths = (tokens != 0).sum(dim=1).clamp(min=1).tolist()
    by_width: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        by_width.setdefault(int(width_of(length)), []).append(i)
    out: torch.Tensor | None = None
    for width, members in sorted(by_width.items()):
        padded = tokens if t >= width else torch.nn.functional.pad(tokens, (0, width - t))
        for start in range(0, len(members), rows):
            chunk = members[start : start + rows]
            index = torch.tensor(chunk + [chunk[-1]] * (rows - len(chunk)), device=tokens.device)
            part = encode(padded[index, :width])  # (rows, D)
            if out is None:
                out = part.new_empty(n, part.shape[1])
            out[index[: len(chunk)]] = part[: len(chunk)]
    if out is None:  # no rows
        return encode(tokens[:0])
    return out


class Encoder(nn.Module, abc.ABC):
    """An image tower and a text tower producing embeddings in one space.

    Attributes every backend sets in ``__init__``:
        config: the :class:`~ximgctx.config.EncoderConfig` it was built from.
        clip: the wrapped backbone module (LoRA adapters are added to it).
        embed_dim: width of the image and text embeddings.
        image_size: side of the square input images.
        context_length: the most text tokens the text tower reads.
        tokenizer: ``tokenizer(texts) -> LongTensor (N, context_length)``.
        provenance: where the starting weights came from (tag or checkpoint, revision, SHA-256), for cards.
    """

    #: the ``EncoderConfig.backend`` value this class implements
    backend: ClassVar[str]

    config: EncoderConfig
    clip: nn.Module
    embed_dim: int
    image_size: int
    context_length: int
    tokenizer: Any
    provenance: dict[str, str | None]

    # ------------------------------------------------------------------------------ towers
    @abc.abstractmethod
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``(B, D)`` of preprocessed pixels ``(B, 3, S, S)``."""

    @abc.abstractmethod
    def encode_text(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """Unnormalised text embeddings ``(N, D)`` of token ids ``(N, L)``; ``trim`` drops shared padding
        where the embeddings stay identical."""

    def encode_text_rowwise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings ``(N, D)`` of token ids ``(N, L)`` in which each row depends on its
        own tokens only (:func:`encode_rowwise`), so an embedding may be cached and reused in another batch
        without changing a bit. This default runs fixed-size calls at the full context length."""
        width = self.context_length if self.pads_with_zero else tokens.shape[1]
        return encode_rowwise(
            tokens, lambda rows: self.encode_text(rows, trim=False), limit=width, width_of=lambda _: width
        )

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(pixels), self.encode_text(tokens)

    # ------------------------------------------------------------------------------ preprocessing
    @property
    @abc.abstractmethod
    def logit_scale(self) -> torch.Tensor:
        """The contrastive temperature (log scale) of the backbone."""

    @property
    @abc.abstractmethod
    def pads_with_zero(self) -> bool:
        """Whether padding is token id 0 (so a batch can be trimmed to its longest real sequence)."""

    @property
    @abc.abstractmethod
    def image_tower(self) -> nn.Module:
        """The vision tower (patch tokens for attention fusion, LoRA targets by tower)."""

    @property
    @abc.abstractmethod
    def preprocess(self) -> dict[str, Any]:
        """The image preprocessing settings saved with a model (size, mean, std, resize mode)."""

    @abc.abstractmethod
    def image_transform(self) -> Any:
        """``transform(PIL image) -> FloatTensor (3, S, S)``."""

    # ------------------------------------------------------------------------------ saving
    def save_files(self, folder: Path) -> None:  # noqa: B027 (a no-op default, not abstract)
        """Write what this backend needs beside ``model.safetensors`` to rebuild it offline (nothing for
        open_clip, whose architectures are registered configs)."""

    @abc.abstractmethod
    def export_plain(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        """Write ``state`` (the backbone's weights, LoRA merged) into ``folder`` in the backend's own
        checkpoint format, loadable without ximgctx."""

    @classmethod
    def for_saved_model(cls, config: EncoderConfig, folder: Path) -> Encoder:
        """The architecture of a saved model's encoder with random weights, built without any download
        (``folder`` is the model folder; the saved weights are loaded after)."""
        from dataclasses import replace

        return cls(replace(config, pretrained=None))

    def base_identity(self) -> tuple[str, str | None]:
        """``(base_model_name_or_path, revision)`` recorded with a peft adapter."""
        return self.config.arch, self.provenance.get("sha256") or self.config.pretrained

    def base_model(self) -> str | None:
        """The hub repository of the starting weights, when there is one (a model card's ``base_model``)."""
        return None
