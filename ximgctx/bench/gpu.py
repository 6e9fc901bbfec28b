"""One GPU benchmark for a lent accelerator: inference and training throughput, memory, achieved TFLOP/s.

    ximgctx bench gpu --out runs/bench_gpu.json            # ViT-B-32 and ViT-L-14, batch 256, bf16 (~3-6 min)
    ximgctx bench gpu --quick --device cpu --out x.json    # the same code path, tiny, on a CPU (CI)

For each architecture (random weights, ``pretrained=None``: nothing is downloaded, and timing does not depend
on the weights), on batches prepared once and kept on the device (so the figures are the model's, not the
image decoder's; ``collate_posts_per_s`` says what one CPU process prepares):

* **inference** posts/s, bf16 autocast, ``inference_mode``: bare open_clip (``encode_image`` +
  ``encode_text`` at 77 tokens) against the context model with 8 replies per post (trimmed tokens,
  deduplicated replies, fusion, heads);
* **training** samples/s of one optimizer step: a bare open_clip fine-tuning step (every weight, CLIP
  contrastive loss, AdamW) against ximgctx's LoRA step (the supervised loss, AdamW over the trainable groups),
  and ximgctx fully fine-tuned (encoder unfrozen, no LoRA) for the memory comparison;
* **peak memory** (``torch.cuda.max_memory_allocated``) of each training step: LoRA against full fine-tuning;
* **TFLOP/s** achieved: FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
  convolutions, forward and backward) divided by the measured step time, against the device's dense bf16
  peak from :data:`BF16_PEAK_TFLOPS` (null for a device not in the table).

Each timed figure is the median of ``--iters`` runs after ``--warmup`` runs, with the device synchronized.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

from ximgctx.errors import ConfigError

#: dense bf16 tensor-core peak (TFLOP/s, no sparsity) by a substring of ``torch.cuda.get_device_name()``; the
#: first match wins, so the more specific names come first
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM
    "H200": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
}

_TASKS: list[tuple[str, list[str], Literal["multiclass", "multilabel"]]] = [
    ("meaning", ["literal", "ironic", "symbolic"], "multiclass"),
    ("intent", ["joke", "protest", "threat", "meme"], "multilabel"),
]
_REPLIES = ["lol", "same", "this is so true", "no way", "who made this", "😂😂😂", "ratio", "facts"]


def bf16_peak(name: str | None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None when it is not in :data:`BF16_PEAK_TFLOPS`."""
    for key, peak in BF16_PEAK_TFLOPS.items():
        if name and key in name:
            return peak
    return None


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's sizes: --quick shrinks the defaults; explicit flags win."""
    quick = args.quick
    archs = args.archs or ("ximgctx-tiny" if quick else "ViT-B-32,ViT-L-14")
    return {
        "archs": [a.strip() for a in archs.split(",") if a.strip()],
        "batch_size": args.batch_size or (4 if quick else 256),
        "replies": args.replies,
        "warmup": args.warmup if args.warmup is not None else (1 if quick else 3),
        "iters": args.iters or (2 if quick else 10),
    }


def _device(args: argparse.Namespace) -> Any:
    import torch

    if args.device == "cpu":
        if not args.quick:
            raise ConfigError(
                "bench gpu: --device cpu runs only with --quick (a CPU cannot run the full sizes)"
            )
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            "bench gpu: no CUDA device is available (torch.cuda.is_available() is False); run it on a GPU "
            "machine, or `ximgctx bench gpu --quick --device cpu` to check the code path"
        )
    return torch.device(args.device)


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 192), (180, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _model(arch: str, *, lora: bool, freeze: bool, replies: int) -> Any:
    from ximgctx.config import EncoderConfig, LoraSpec, ModelConfig, TaskSpec
    from ximgctx.models.context_model import ContextModel

    config = ModelConfig(
        tasks=[TaskSpec(n, labels, kind=k) for n, labels, k in _TASKS],
        encoder=EncoderConfig(arch=arch, pretrained=None, freeze=freeze),
        lora=LoraSpec() if lora else None,
    )
    config.limits.max_replies = max(config.limits.max_replies, replies)
    return ContextModel(config)


def _batch(model: Any, n: int, replies: int, device: Any) -> Any:
    """A collated batch of ``n`` labeled posts with an image and ``replies`` replies each, on ``device``."""
    from ximgctx.data.record import Post, Reply

    image = _png()
    posts = [
        Post(
            id=f"b{i}",
            image=image,
            text=f"when monday hits again number {i}",
            replies=[Reply(_REPLIES[(i + j) % len(_REPLIES)] + f" {i % 7}") for j in range(replies)],
            labels={"meaning": "ironic", "intent": ["joke"]},
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    batch = model.processor(posts, invalid_labels="drop")
    return batch.to(device), n / (time.perf_counter() - start)


class _Timer:
    """Median seconds of ``fn`` after warm-up runs, the device synchronized around each run."""

    def __init__(self, device: Any, warmup: int, iters: int) -> None:
        self.device, self.warmup, self.iters = device, warmup, iters

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any]) -> float:
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        for _ in range(self.iters):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def _flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one run of ``fn``, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _peak_memory(device: Any, fn: Callable[[], Any]) -> float | None:
    """Peak GiB allocated while running ``fn`` once (CUDA only)."""
    import torch

    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def _autocast(device: Any, dtype: Any) -> Any:
    import torch

    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _inference(arch: str, s: dict[str, Any], device: Any, dtype: Any, timer: _Timer) -> dict[str, Any]:
    """Posts/s and TFLOP/s of bare open_clip and of the context model (8 replies), in inference mode."""
    import open_clip
    import torch
    import torch.nn.functional as F

    n = s["batch_size"]
    model = _model(arch, lora=True, freeze=True, replies=s["replies"]).to(device).eval()
    batch, collate_pps = _batch(model, n, s["replies"], device)
    clip = open_clip.create_model(arch, pretrained=None).to(device).eval()  # what a bare user runs
    tokens = open_clip.get_tokenizer(arch)([f"when monday hits again number {i}" for i in range(n)]).to(
        device
    )
    pixels = batch.pixels

    def bare() -> None:
        with torch.inference_mode(), _autocast(device, dtype):
            F.normalize(clip.encode_image(pixels), dim=-1)  # (B, D)
            F.normalize(clip.encode_text(tokens), dim=-1)  # (B, D)

    def context() -> None:
        with torch.inference_mode(), _autocast(device, dtype):
            model(batch)

    out: dict[str, Any] = {"collate_posts_per_s": round(collate_pps, 1)}
    for name, fn in (("bare_open_clip", bare), ("ximgctx", context)):
        seconds = timer(fn)
        out[name] = {"posts_per_s": round(n / seconds, 1), "seconds_per_batch": seconds, "flops": _flops(fn)}
    out["ratio_ximgctx_to_bare"] = round(
        out["ximgctx"]["posts_per_s"] / out["bare_open_clip"]["posts_per_s"], 3
    )
    out["distinct_replies_per_batch"] = int(batch.reply_tokens.shape[0])
    return out


def _bare_train_step(arch: str, n: int, device: Any, dtype: Any) -> tuple[Callable[[], Any], int]:
    """One full fine-tuning step of bare open_clip: contrastive loss, AdamW over every weight."""
    import open_clip
    import torch

    clip = open_clip.create_model(arch, pretrained=None).to(device).train()
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(n, 3, size, size, device=device)
    tokens = open_clip.get_tokenizer(arch)([f"a photo of thing {i}" for i in range(n)]).to(device)
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-5)

    def step() -> None:
        with _autocast(device, dtype):
            img, txt = clip.encode_image(pixels, normalize=True), clip.encode_text(tokens, normalize=True)
            loss = loss_fn(img, txt, clip.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in clip.parameters())


def _context_train_step(
    arch: str, s: dict[str, Any], device: Any, dtype: Any, *, lora: bool
) -> tuple[Callable[[], Any], int]:
    """One ximgctx fine-tuning step (the supervised loss, the recipe's AdamW groups): LoRA, or every
    weight."""
    from ximgctx.training.config import OptimConfig
    from ximgctx.training.finetune import supervised_loss
    from ximgctx.training.optim import build_optimizer

    model = _model(arch, lora=lora, freeze=lora, replies=s["replies"]).to(device).train()
    batch, _ = _batch(model, s["batch_size"], s["replies"], device)
    optimizer = build_optimizer(model.parameter_groups(), OptimConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def step() -> None:
        with _autocast(device, dtype):
            loss = supervised_loss(model, model(batch), batch).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, trainable


def _training(arch: str, s: dict[str, Any], device: Any, dtype: Any, timer: _Timer) -> dict[str, Any]:
    """Samples/s, peak memory and TFLOP/s of one optimizer step, bare full fine-tuning vs ximgctx LoRA /
    full."""
    import gc

    import torch

    n = s["batch_size"]
    out: dict[str, Any] = {}
    builders = {
        "bare_open_clip_full": lambda: _bare_train_step(arch, n, device, dtype),
        "ximgctx_lora": lambda: _context_train_step(arch, s, device, dtype, lora=True),
        "ximgctx_full": lambda: _context_train_step(arch, s, device, dtype, lora=False),
    }
    for name, build in builders.items():
        step, trainable = build()
        peak = _peak_memory(device, step)  # the first step also allocates the optimizer's moments
        seconds = timer(step)
        flops = _flops(step)
        out[name] = {
            "samples_per_s": round(n / seconds, 1),
            "seconds_per_step": seconds,
            "peak_memory_gib": None if peak is None else round(peak, 2),
            "flops": flops,
            "trainable_parameters": trainable,
        }
        del step
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    lora, full = out["ximgctx_lora"]["peak_memory_gib"], out["ximgctx_full"]["peak_memory_gib"]
    out["peak_memory_lora_to_full"] = None if lora is None or not full else round(lora / full, 3)
    out["ratio_ximgctx_lora_to_bare"] = round(
        out["ximgctx_lora"]["samples_per_s"] / out["bare_open_clip_full"]["samples_per_s"], 3
    )
    return out


def _add_tflops(section: dict[str, Any], peak: float | None, key: str) -> None:
    """Achieved TFLOP/s (counted FLOPs / measured seconds) and its share of the device peak, per path."""
    for entry in section.values():
        if isinstance(entry, dict) and "flops" in entry:
            tflops = entry["flops"] / entry[key] / 1e12
            entry["achieved_tflops"] = round(tflops, 3)
            entry["share_of_bf16_peak"] = None if peak is None else round(tflops / peak, 4)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import ximgctx.models.open_clip_encoder  # noqa: F401 (registers the shipped tiny architectures with open_clip)

    s = _settings(args)
    device = _device(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = bf16_peak(name)
    timer = _Timer(device, s["warmup"], s["iters"])
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for arch in s["archs"]:
        inference = _inference(arch, s, device, dtype, timer)
        _add_tflops(inference, peak, "seconds_per_batch")
        training = _training(arch, s, device, dtype, timer)
        _add_tflops(training, peak, "seconds_per_step")
        results[arch] = {"inference": inference, "training": training}
    return {
        "device": str(device),
        "device_name": name,
        "dtype": str(dtype).replace("torch.", ""),
        "bf16_peak_tflops": peak,
        "quick": bool(args.quick),
        "settings": s,
        "results": results,
        "wall_s": round(time.perf_counter() - start, 1),
    }
