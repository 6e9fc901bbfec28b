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
    "GROUP_OVERHEAD_TOKENS",
    "Encoder",
    "ModelFolderError",
    "PretrainedWeightsError",
    "encode_by_length",
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
