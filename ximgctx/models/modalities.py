"""One type for a set of modalities, whichever way a caller names it.

Ablations name the modalities *kept* (``"image+text"``, the evaluation report's keys and ContextBench's
ceilings); the model masks the ones *dropped* (``model(batch, drop=("replies",))``). :class:`Modalities` is
both: ``Modalities.parse("image+text").dropped == ("replies",)`` and ``Modalities.without("replies").key ==
"image+text"``, always in the canonical order image, text, replies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ximgctx.config import MODALITIES
from ximgctx.errors import ConfigError

__all__ = ["ALL", "Modalities"]


@dataclass(frozen=True)
class Modalities:
    """The modalities a forward pass reads (the others are replaced by their learned null embeddings)."""

    kept: tuple[str, ...]  # a non-empty subset of MODALITIES, in canonical order

    def __post_init__(self) -> None:
        bad = [m for m in self.kept if m not in MODALITIES]
        if bad or not self.kept:
            raise ConfigError(
                f"modalities are a non-empty subset of {list(MODALITIES)}, got {list(self.kept)}"
            )
        object.__setattr__(self, "kept", tuple(m for m in MODALITIES if m in self.kept))

    @classmethod
    def parse(cls, value: str | Iterable[str] | Modalities) -> Modalities:
        """``"image+text"``, ``["image", "text"]`` or a :class:`Modalities`: the modalities kept."""
        if isinstance(value, Modalities):
            return value
        kept = value.split("+") if isinstance(value, str) else list(value)
        try:
            return cls(tuple(kept))
        except ConfigError:
            raise ConfigError(
                f"a kept-modality key joins {list(MODALITIES)} with '+', got {value!r}"
            ) from None

    @classmethod
    def without(cls, *dropped: str) -> Modalities:
        """Every modality but ``dropped``."""
        bad = [m for m in dropped if m not in MODALITIES]
        if bad:
            raise ConfigError(f"cannot drop {bad}: modalities are {list(MODALITIES)}")
        return cls(tuple(m for m in MODALITIES if m not in dropped))

    @property
    def key(self) -> str:
        """The kept-modality key: ``"image+text"``."""
        return "+".join(self.kept)

    @property
    def dropped(self) -> tuple[str, ...]:
        """The modalities masked out, what ``ContextModel.forward(drop=...)`` takes."""
        return tuple(m for m in MODALITIES if m not in self.kept)


ALL = Modalities(MODALITIES)  # every modality: the full model
