"""Tiny random Hugging Face CLIP and SigLIP checkpoints, built offline in a folder (tests only).

CLIP gets the real CLIP BPE tokenizer, built from open_clip's bundled vocabulary; SigLIP (whose tokenizer is
sentencepiece, not installed here) a small word-level ``tokenizers`` model saved as a fast tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

_WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "photo",
    "of",
    "is",
    "on",
    "when",
    "monday",
    "hits",
    "lol",
    "same",
    "see",
    "you",
    "all",
    "saturday",
    "count",
    "me",
    "in",
    "protest",
    "sign",
    "crowd",
    "joke",
    "meme",
    "threat",
    "red",
    "blue",
    "green",
    "shape",
    "circle",
    "square",
    "hello",
    "world",
]


def clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    merges = [tuple(pair) for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    # open_clip names the two special tokens differently; the ids are the same (49406, 49407)
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in bpe.encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def siglip_tokenizer(max_length: int = 16):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def make_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A random 2-layer CLIPModel (32-pixel images, 8-pixel patches) with CLIP's tokenizer, saved to
    ``path``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(path)
    clip_tokenizer().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return Path(path)


def make_tiny_siglip(path: Path, seed: int = 0) -> Path:
    """A random 2-layer SiglipModel (32-pixel images, 16-token texts) with a word-level tokenizer."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    tok = siglip_tokenizer(16)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=None,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
    )
    SiglipModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)
