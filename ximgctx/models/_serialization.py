"""Saving and loading context models: safetensors only, a peft adapter, and a verified artifact manifest.

Layout of a saved model folder (an artifact of kind ``"model"``, see :mod:`ximgctx._artifacts`)::

    config.json              ModelConfig (resolved), the starting weights' provenance, library version
    model.safetensors        every non-adapter weight, under plain open_clip names (no ".base_layer")
    adapter/adapter_model.safetensors + adapter_config.json   the LoRA adapter in peft's format, where stock
                             peft reproduces it exactly; else + ximgctx_adapter.json and a README
                             (open_clip MHA adapters, see :mod:`ximgctx.models.export`)
    processor_config.json    tokenizer and image preprocessing settings
    hf/                      transformers backend only: the checkpoint's config.json, tokenizer files and
                             preprocessor_config.json, so loading needs no hub (the weights are in
                             model.safetensors)
    card.json                the model card's extra sections (metrics, governance, training data), so that
                             re-saving a loaded model keeps them
    README.md                model card
    manifest.json            SHA-256 and size of every other file (written by the artifact module)

Nothing is pickled. Loading verifies the whole folder first (every file listed, no link, no path outside,
no unlisted file) and refuses a mismatch naming the file. It then builds the architecture without
initialising it (:mod:`ximgctx.models._skeleton`) and assigns it copies of the weights file's tensors (one
copy each, as copying into initialised weights did, without the initialisation): a loaded model holds no view
of the file, so a file rewritten or truncated in place later changes nothing. A model folder cannot make the
loading process run
code: its architecture must be a registered one unless the caller opts in (``trust_remote_arch=True``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ximgctx._artifacts import pinned_copy, verify_artifact, write_artifact
from ximgctx.config import ModelConfig
from ximgctx.errors import ArtifactError, XimgctxError
from ximgctx.models._skeleton import skeleton_tensors, skip_parameter_init, unloaded_parameters
from ximgctx.models.backends import ENCODERS
from ximgctx.models.encoder import Encoder, ModelFolderError, portable_ref
from ximgctx.models.export import save_adapter
from ximgctx.models.lora import base_name, load_lora_state_dict
from ximgctx.models.open_clip_encoder import quiet_random_init, trust_remote_arch

if TYPE_CHECKING:
    from ximgctx.models.context_model import ContextModel

KIND = "model"
FORMAT = "ximgctx-model"
FORMAT_VERSION = 2
_MAX_JSON_BYTES = 16 << 20  # config.json / card.json larger than this are refused before parsing


def _weights_line(model: ContextModel) -> str:
    prov = getattr(model.encoder, "provenance", None) or {}
    name = portable_ref(prov.get("pretrained"))
    if name is None:
        return "random init (no pretrained weights)"
    digest = prov.get("sha256")
    return f"`{name}`" + (f" (SHA-256 `{digest}`)" if digest else "")


def card_metadata(model: ContextModel, metadata: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face model-card metadata: ximgctx's defaults, then the model's own, then ``metadata``."""
    tasks = [t.name for t in model.config.tasks]
    meta: dict[str, Any] = {
        "library_name": "ximgctx",
        "tags": ["ximgctx", "multimodal", "content-moderation", model.config.encoder.backend, *tasks],
        "license": "other",  # not known to ximgctx: set metadata={"license": ...} when saving
        "base_model": model.encoder.base_model(),
        "datasets": [],
        "pipeline_tag": "image-classification",  # a post (image + text + replies) in, label scores out
    }
    meta.update(getattr(model, "card_metadata", {}) or {})
    meta.update(metadata)
    return json.loads(json.dumps({k: v for k, v in meta.items() if v is not None}, default=str))


def _yaml_header(meta: dict[str, Any]) -> list[str]:
    from huggingface_hub import ModelCardData

    return ["---", ModelCardData(**meta).to_yaml().rstrip("\n"), "---", ""]


def _lora_line(lora: Any) -> str:
    if lora is None:
        return "none"
    return f"r={lora.r}, alpha={lora.alpha}, targets={lora.targets}, towers={lora.towers}"


def _model_card(model: ContextModel, card: dict[str, Any], meta: dict[str, Any]) -> str:
    from ximgctx.version import __version__

    cfg = model.config
    counts = model.trainable_parameters()
    lines = [
        *_yaml_header(meta),
        "# ximgctx context model",
        "",
        f"Written by ximgctx {__version__}. Load with `ximgctx.ContextModel.from_pretrained(path)` or "
        "`ximgctx.Predictor.from_pretrained(path)`.",
        "",
        "## Architecture",
        f"- encoder: {cfg.encoder.backend} `{portable_ref(cfg.encoder.arch)}`, starting weights "
        f"{_weights_line(model)}",
        f"- LoRA: {_lora_line(cfg.lora)}",
        f"- fusion: `{cfg.fusion.kind}`, hidden {cfg.fusion.hidden_dim}",
        f"- parameters: {counts['total']:,} ({counts['trainable']:,} trainable when saved)",
        f"- inputs: image, post text (capped at {cfg.limits.max_text_chars} chars), up to "
        f"{cfg.limits.max_replies} replies",
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
        "Ranking and triage of public social-media posts for trust-and-safety review and for search. Scores "
        "are "
        "calibrated per task on a validation set when the card says so; decisions about people should keep a "
        "human reviewer in the loop, and the model should be re-evaluated on the population it is used on.",
        "",
    ]
    return "\n".join(lines)


def save_model(
    model: ContextModel,
    path: Path,
    *,
    card: dict[str, Any],
    overwrite: bool = False,
    inputs: tuple[str | Path, ...] = (),
    metadata: dict[str, Any] | None = None,
    authors: bytes | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically; ``card`` sections are added to those the model already has,
    ``metadata`` to its Hugging Face card metadata; ``authors`` (a keyed author set, checked first) becomes
    :data:`ximgctx.governance.authors.MODEL_AUTHORS_FILE`."""
    from ximgctx.governance.authors import MODEL_AUTHORS_FILE, parse_author_digests
    from ximgctx.version import __version__

    sections = {**getattr(model, "card", {}), **card}
    meta = card_metadata(model, metadata or {})
    with write_artifact(path, KIND, overwrite=overwrite, inputs=inputs) as tmp:
        state = model.state_dict()
        weights = {
            base_name(k): v.detach().cpu().contiguous().clone() for k, v in state.items() if "lora_" not in k
        }
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        if model.lora_config is not None:
            save_adapter(model, tmp / "adapter")
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ximgctx_version": __version__,
            "model": _portable_model_config(model.config.to_dict()),
            "provenance": {
                k: portable_ref(v) if k == "pretrained" else v for k, v in model.encoder.provenance.items()
            },
            "card_metadata": meta,
        }
        _write_json(tmp / "config.json", config)
        processor = {
            "tokenizer": portable_ref(model.config.encoder.arch),
            "context_length": model.encoder.context_length,
            "image_size": model.encoder.image_size,
            "preprocess": model.encoder.preprocess,
            "limits": model.config.to_dict()["limits"],
        }
        model.encoder.save_files(tmp)
        _write_json(tmp / "processor_config.json", processor)
        _write_json(tmp / "card.json", json.loads(json.dumps(sections, default=str)))
        (tmp / "README.md").write_text(_model_card(model, sections, meta))
        if authors is not None:
            parse_author_digests(authors, "the author set given to save_pretrained")
            (tmp / MODEL_AUTHORS_FILE).parent.mkdir(parents=True, exist_ok=True)
            (tmp / MODEL_AUTHORS_FILE).write_bytes(authors)
    return Path(path).resolve()


def _portable_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The model config as saved: local paths reduced to their last component (:func:`portable_ref`), the
    download cache dropped; the architecture itself is rebuilt from the artifact, not from these."""
    enc = dict(config["encoder"])
    enc["arch"] = portable_ref(enc.get("arch"))
    enc["pretrained"] = portable_ref(enc.get("pretrained"))
    enc["cache_dir"] = None
    return {**config, "encoder": enc}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: missing") from None
    if size > _MAX_JSON_BYTES:
        raise ModelFolderError(
            f"{path}: {size} bytes, over the {_MAX_JSON_BYTES} a model's JSON file may have"
        )
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path}: not valid JSON ({e})") from None


def verify_folder(path: Path, *, expected_sha256: str | None = None) -> dict[str, Any]:
    """Check the whole folder against its manifest; return the manifest's file list or raise."""
    from ximgctx.models.hub import transformers_hint

    if not Path(path).is_dir():
        raise ModelFolderError(
            f"{path}: no such model folder"
            + (" (it is a file)" if Path(path).exists() else "")
            + " (a model on the Hugging Face Hub is named org/name, or hub:name)"
        )
    try:
        manifest = verify_artifact(path, KIND, max_version=1, expected_sha256=expected_sha256)
    except ArtifactError as e:
        raise ModelFolderError(f"{e}{transformers_hint(path)}") from None
    return {"files": manifest.files, "digest": manifest.digest}


def read_config(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig and raw config.json of a (verified) model folder."""
    raw = _read_json(path / "config.json")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        fmt = raw.get("format") if isinstance(raw, dict) else None
        raise ModelFolderError(f"{path / 'config.json'}: not an ximgctx model config (format={fmt!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"{path / 'config.json'}: model format version {raw.get('format_version')!r}; this ximgctx reads "
            f"version {FORMAT_VERSION}"
        )
    model = raw.get("model")
    if not isinstance(model, dict):
        raise ModelFolderError(
            f"{path / 'config.json'}: 'model' must be a mapping, got {type(model).__name__}"
        )
    try:
        config = ModelConfig.from_dict(model)
    except (TypeError, ValueError) as e:
        raise ModelFolderError(f"{path / 'config.json'}: {e}") from None
    return config, raw


def _saved_encoder(path: Path, config: ModelConfig) -> Encoder:
    """The encoder's architecture (random weights, no download) from the saved folder; weights follow."""
    try:
        return ENCODERS[config.encoder.backend].for_saved_model(config.encoder, path)
    except XimgctxError:  # a refusal (a remote architecture, say) keeps its own type and message
        raise
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"{path}: the saved encoder cannot be rebuilt ({e})") from None


def load_model(
    cls: type[ContextModel],
    path: Path,
    *,
    device: torch.device,
    verify: bool,
    expected_sha256: str | None = None,
    trust_remote_arch_: bool = False,
    build: Callable[[ModelConfig], ModelConfig] | None = None,
) -> ContextModel:
    """Load a saved model folder (verified first, or from a pinned private copy with ``expected_sha256``).

    ``build`` maps the saved config to the config whose modules are built (a warm start builds its own run's
    config: same architecture, its own dropout, loss weights and input caps); it is called on the verified
    folder's config and may refuse it by raising. The saved weights must then fit the built modules.
    """
    if expected_sha256 is not None:  # pinned: load exactly the bytes that were hashed
        if not Path(path).is_dir():
            raise ModelFolderError(f"{path}: no such model folder")
        try:
            with pinned_copy(path, KIND, max_version=1, expected_sha256=expected_sha256) as m:
                return _load(cls, m.path, device=device, trust_remote_arch_=trust_remote_arch_, build=build)
        except ArtifactError as e:
            raise ModelFolderError(str(e)) from None
    if verify:
        verify_folder(path)
    return _load(cls, path, device=device, trust_remote_arch_=trust_remote_arch_, build=build)


def _load(
    cls: type[ContextModel],
    path: Path,
    *,
    device: torch.device,
    trust_remote_arch_: bool,
    build: Callable[[ModelConfig], ModelConfig] | None = None,
) -> ContextModel:
    saved, raw = read_config(path)
    config = saved if build is None else build(saved)
    # the architecture with allocated but uninitialised parameters: the saved weights replace every one
    with trust_remote_arch(trust_remote_arch_), quiet_random_init(), skip_parameter_init():
        model = cls(config, encoder=_saved_encoder(path, config))
    skeleton = skeleton_tensors(model)
    model.config = config  # the skeleton was built without downloading; keep the real starting weights
    prov = raw.get("provenance")
    if isinstance(prov, dict):
        model.encoder.provenance = {k: (str(v) if v is not None else None) for k, v in prov.items()}
    meta = raw.get("card_metadata")
    model.card_metadata = meta if isinstance(meta, dict) else {}
    card = _read_json(path / "card.json") if (path / "card.json").is_file() else {}
    model.card = card if isinstance(card, dict) else {}
    try:
        # memory-mapped by safetensors; each tensor is copied out once below (into memory of its own, the
        # model's from then on), so a file truncated or rewritten in place later cannot change or crash a
        # loaded model
        weights = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ModelFolderError(f"{path / 'model.safetensors'}: unreadable ({e})") from None
    current = model.state_dict(keep_vars=True)
    new_state = {}
    missing = []
    for key, target in current.items():
        if "lora_" in key:
            continue
        src = base_name(key)
        if src not in weights:
            missing.append(src)
            continue
        if weights[src].shape != target.shape:
            raise ModelFolderError(
                f"{path / 'model.safetensors'}: {src} has shape {tuple(weights[src].shape)}, the config's "
                f"architecture needs {tuple(target.shape)}"
            )
        # the dtype the architecture has (a file may hold another), always a copy: never a view of the map
        new_state[key] = weights[src].to(target.dtype, copy=True)
    if missing:
        raise ModelFolderError(
            f"{path / 'model.safetensors'}: missing weights {missing[:5]} (and {max(len(missing) - 5, 0)} "
            "more)"
        )
    del weights  # the map is released; the model holds only its own copies
    model.load_state_dict(new_state, strict=False, assign=True)
    if config.lora is not None:
        adapter_file = path / "adapter" / "adapter_model.safetensors"
        if not adapter_file.is_file():
            raise ModelFolderError(f"{adapter_file}: missing, but the config has LoRA")
        try:
            load_lora_state_dict(model.encoder.clip, load_file(str(adapter_file)))
        except (SafetensorError, RuntimeError, KeyError, ValueError) as e:
            raise ModelFolderError(f"{adapter_file}: does not fit the config's LoRA ({e})") from None
    unloaded = unloaded_parameters(model, skeleton, exclude="lora_")
    if unloaded:  # every key was found above: only a module that shares or hides a parameter gets here
        raise ModelFolderError(
            f"{path}: the saved weights left {len(unloaded)} parameter(s) of the architecture unloaded "
            f"({unloaded[:5]})"
        )
    del skeleton
    return model.to(device).eval()
