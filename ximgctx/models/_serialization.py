"""Saving and loading context models: safetensors only, a peft adapter, and a SHA-256 manifest.

Layout of a saved model folder::

    config.json              ModelConfig (resolved), plus format and library version
    model.safetensors        every non-adapter weight, under plain open_clip names (no ".base_layer")
    adapter/adapter_config.json, adapter/adapter_model.safetensors   the LoRA adapter in peft's format
    processor_config.json    tokenizer and image preprocessing settings
    README.md                model card
    manifest.json            SHA-256 and size of every other file

Nothing is pickled. Loading verifies every file against the manifest first and refuses a folder with a
mismatching, missing or unlisted weights file, naming it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import torch
from safetensors.torch import load_file, save_file

from ximgctx._fsutil import replace_folder, sha256_file
from ximgctx.config import ModelConfig
from ximgctx.models.lora import base_name, load_lora_state_dict, lora_state_dict

if TYPE_CHECKING:
    from ximgctx.models.context_model import ContextModel

FORMAT = "ximgctx-model"
FORMAT_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")


class ModelFolderError(RuntimeError):
    """A saved model folder is incomplete, altered, or not an ximgctx model."""


def _model_card(model: ContextModel, card: dict[str, Any]) -> str:
    from ximgctx import __version__

    cfg = model.config
    counts = model.trainable_parameters()
    lines = [
        "# ximgctx context model",
        "",
        f"Written by ximgctx {__version__}. Load with `ximgctx.ContextModel.from_pretrained(path)` or "
        "`ximgctx.Predictor.from_pretrained(path)`.",
        "",
        "## Architecture",
        f"- encoder: open_clip `{cfg.encoder.arch}`, starting weights `{cfg.encoder.pretrained or 'random init'}`",
        f"- LoRA: {'none' if cfg.lora is None else f'r={cfg.lora.r}, alpha={cfg.lora.alpha}, targets={cfg.lora.targets}, towers={cfg.lora.towers}'}",
        f"- fusion: `{cfg.fusion.kind}`, hidden {cfg.fusion.hidden_dim}",
        f"- parameters: {counts['total']:,} ({counts['trainable']:,} trainable when saved)",
        f"- inputs: image, post text (capped at {cfg.data.max_text_chars} chars), up to {cfg.data.max_replies} replies",
        "",
        "## Tasks",
        "| task | kind | reads | labels |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t.name} | {t.kind} | {t.source} | {', '.join(t.labels)} |" for t in cfg.tasks]
    for title, body in card.items():
        lines += ["", f"## {title}", ""]
        if isinstance(body, str):
            lines.append(body)
        else:
            lines += ["```json", json.dumps(body, indent=2, sort_keys=True, default=str), "```"]
    if "Data governance" not in card:
        lines += [
            "",
            "## Data governance",
            "",
            "Not recorded: the training data's governance was not passed to save_pretrained.",
        ]
    lines += [
        "",
        "## Intended use",
        "",
        "Ranking and triage of public social-media posts for trust-and-safety review and for search. Scores are "
        "calibrated per task on a validation set when the card says so; decisions about people should keep a "
        "human reviewer in the loop, and the model should be re-evaluated on the population it is used on.",
        "",
    ]
    return "\n".join(lines)


def save_model(model: ContextModel, path: Path, *, card: dict[str, Any]) -> Path:
    """Write ``model`` to ``path`` atomically (a temporary sibling folder renamed into place)."""
    from ximgctx import __version__

    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        state = model.state_dict()
        weights = {
            base_name(k): v.detach().cpu().contiguous().clone() for k, v in state.items() if "lora_" not in k
        }
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        if model.lora_config is not None:
            (tmp / "adapter").mkdir()
            model.lora_config.save_pretrained(str(tmp / "adapter"))
            adapter = {
                k: v.detach().cpu().contiguous().clone()
                for k, v in lora_state_dict(model.encoder.clip).items()
            }
            save_file(adapter, str(tmp / "adapter" / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ximgctx_version": __version__,
            "model": model.config.to_dict(),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        processor = {
            "tokenizer": model.config.encoder.arch,
            "context_length": model.encoder.context_length,
            "image_size": model.encoder.image_size,
            "preprocess": {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in open_clip.get_model_preprocess_cfg(model.encoder.clip).items()
            },
            "data": model.config.to_dict()["data"],
        }
        (tmp / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        (tmp / "README.md").write_text(_model_card(model, card))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "files": {
                p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in files
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def verify_folder(path: Path) -> dict[str, Any]:
    """Check every file against ``manifest.json``; return the manifest or raise ModelFolderError."""
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise ModelFolderError(f"{path}: no such model folder")
    if not manifest_path.is_file():
        raise ModelFolderError(
            f"{path}: no manifest.json, so the files cannot be verified; "
            f"this is not a folder written by ContextModel.save_pretrained"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelFolderError(f"{manifest_path}: unreadable manifest ({e})") from e
    for rel, info in listed.items():
        f = path / rel
        if not f.is_file():
            raise ModelFolderError(f"{f}: listed in manifest.json but missing")
        digest = sha256_file(f)
        if digest != info.get("sha256"):
            raise ModelFolderError(
                f"{f}: SHA-256 {digest[:16]}... does not match manifest.json ({str(info.get('sha256'))[:16]}...); "
                f"the file was altered or corrupted after saving. Refusing to load it."
            )
    for f in path.rglob("*"):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and rel != "manifest.json" and rel not in listed and f.suffix in _WEIGHT_SUFFIXES:
            raise ModelFolderError(
                f"{f}: a weights file not listed in manifest.json; refusing to load the folder"
            )
    return manifest


def load_model(cls: type[ContextModel], path: Path, *, device: torch.device, verify: bool) -> ContextModel:
    if verify:
        verify_folder(path)
    try:
        raw = json.loads((path / "config.json").read_text())
    except FileNotFoundError as e:
        raise ModelFolderError(f"{path / 'config.json'}: missing") from e
    if raw.get("format") != FORMAT:
        raise ModelFolderError(
            f"{path / 'config.json'}: not an ximgctx model config (format={raw.get('format')!r})"
        )
    config = ModelConfig.from_dict(raw["model"])
    model = cls._skeleton(config)
    weights = load_file(str(path / "model.safetensors"))
    current = model.state_dict()
    new_state = {}
    missing = []
    for key in current:
        if "lora_" in key:
            continue
        src = base_name(key)
        if src not in weights:
            missing.append(src)
            continue
        new_state[key] = weights[src]
    if missing:
        raise ModelFolderError(
            f"{path / 'model.safetensors'}: missing weights {missing[:5]} (and {max(len(missing) - 5, 0)} more)"
        )
    model.load_state_dict(new_state, strict=False)
    if config.lora is not None:
        adapter_file = path / "adapter" / "adapter_model.safetensors"
        if not adapter_file.is_file():
            raise ModelFolderError(f"{adapter_file}: missing, but the config has LoRA")
        load_lora_state_dict(model.encoder.clip, load_file(str(adapter_file)))
    return model.to(device).eval()
