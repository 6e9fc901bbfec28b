"""Text before the tokenizer and tokens after it: character caps and trimming of padded token batches.

Post text comes from strangers, so it is capped in characters before BPE (:func:`cap_text`): a 1 MB reply
cannot make the tokenizer do unbounded work. Token batches are trimmed to their longest real sequence
(:func:`trim_tokens`): open_clip pads every text to 77 tokens, and replies are short.
"""

from __future__ import annotations

import unicodedata

import torch

__all__ = ["cap_text", "trim_tokens"]


def cap_text(text: str, max_chars: int) -> str:
    """Cap text to at most ``max_chars`` characters (code points), keeping the start.

    Applied before BPE so tokenizer work is bounded. The cut never separates a character from the
    combining marks, variation selectors, emoji modifiers or zero-width joiners that follow it, nor splits
    a surrogate pair or a flag's pair of regional indicators: it backs off to the start of that sequence,
    so the result can be shorter than ``max_chars``. A single sequence longer than ``max_chars`` (e.g.
    "zalgo" text) is cut hard rather than dropped.

    Args:
        text: The text to cap.
        max_chars: Maximum length in code points; must be positive.

    Returns:
        ``text`` itself when it is short enough, otherwise a prefix of it.

    Raises:
        ValueError: ``max_chars`` is not a positive integer.
        TypeError: ``text`` is not a str.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer, got {max_chars!r}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) <= max_chars:
        return text
    cut = max_chars
    while cut > 0 and _continues_cluster(text, cut):
        cut -= 1
    return text[:cut] if cut > 0 else text[:max_chars]


def trim_tokens(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Cut a padded token batch to its longest real sequence, at least one column: (N, 77) -> (N, L)."""
    if tokens.numel() == 0:
        return tokens[:, :1]
    lengths = (tokens != pad_id).sum(dim=1)  # (N,)
    return tokens[:, : max(int(lengths.max().item()), 1)]


def _continues_cluster(text: str, i: int) -> bool:
    """True when ``text[i]`` belongs to the same user-perceived character as ``text[i - 1]``."""
    ch, prev = text[i], text[i - 1]
    cp, prev_cp = ord(ch), ord(prev)
    if 0xDC00 <= cp <= 0xDFFF and 0xD800 <= prev_cp <= 0xDBFF:
        return True  # surrogate pair left in a str by a lax decoder
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return True  # combining marks (accents, Indic vowel signs, enclosing keycaps)
    if cp == 0x200D or prev_cp == 0x200D:
        return True  # zero-width joiner and the character it joins (family and profession emoji)
    if (
        0xFE00 <= cp <= 0xFE0F
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    ):
        return True  # variation selectors, skin-tone modifiers, emoji tag sequences (subdivision flags)
    if _is_regional_indicator(cp) and _is_regional_indicator(prev_cp):
        run = 0  # regional indicators pair up into flags from the start of the run
        j = i - 1
        while j >= 0 and _is_regional_indicator(ord(text[j])):
            run += 1
            j -= 1
        return run % 2 == 1
    return False


def _is_regional_indicator(cp: int) -> bool:
    return 0x1F1E6 <= cp <= 0x1F1FF
