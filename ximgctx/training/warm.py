"""Warm start: a fine-tuning run that starts from a saved model's weights instead of a random init.

``train.init_from`` names a model folder written by ``save_pretrained`` (the serving model of a learning
loop, a previous run's ``best/``); ``train.init_sha256`` pins it (its artifact digest, as
``ContextModel.from_pretrained(expected_sha256=...)``). The folder is verified and read from a private copy
of exactly the hashed bytes; its architecture must be registered (``trust_remote_arch`` stays off).

The run builds its own ``model`` config (its dropout, modality dropout, LoRA dropout, loss weights, prompts
and input caps apply) and loads every weight of the folder into it: the encoder's base weights, the LoRA
adapters (unmerged, trainable), the null embeddings, the fusion and the heads with their calibration buffers.
The architecture must therefore be the folder's: the same tasks (labels, kind, source), the same encoder
(backend, architecture, frozen or not), the same LoRA (rank, alpha, targets, towers) and the same fusion
shape; any other difference is a :class:`ConfigError` naming each one. Trainable parameters, parameter groups
and the optimizer are then exactly those of a fresh run.

The exported model's card records the start as ``{"from": <folder name>, "sha256": <digest>}`` and the card's
training config says ``init_from: sha256:<digest>``: no local path leaves the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ximgctx.config import ConfigError, ModelConfig, flatten_config
from ximgctx.models.context_model import ContextModel
from ximgctx.models.encoder import portable_ref

__all__ = ["WARM_START_SECTION", "incompatibilities", "load_warm_start", "portable_init", "warm_start_card"]

#: model-card section of a warm-started model
WARM_START_SECTION = "Warm start"

#: model config keys a warm start may change: training knobs, input caps, and where the base weights were
#: read from (a warm start reads them from the folder)
_MAY_DIFFER = (
    "encoder.pretrained",
    "encoder.cache_dir",
    "encoder.revision",
    "encoder.grad_checkpointing",
    "fusion.dropout",
    "fusion.modality_dropout",
    "lora.dropout",
)
_TASK_KEYS = ("labels", "kind", "source")  # what a head's weights mean; weight and prompt may differ


def incompatibilities(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
    """Each architectural difference between a saved model's config and a run's ``model`` config, as
    ``model.<key> (init_from: <saved>, now: <wanted>)``; empty when the run can start from the folder."""
    out: list[str] = []

    def differ(key: str, a: Any, b: Any) -> None:
        if a != b:
            out.append(f"model.{key} (init_from: {a!r}, now: {b!r})")

    old = {t.name: t for t in saved.tasks}
    new = {t.name: t for t in wanted.tasks}
    for name in sorted(set(old) | set(new)):
        if name not in new or name not in old:
            differ(
                f"tasks.{name}",
                "present" if name in old else "<absent>",
                "present" if name in new else "<absent>",
            )
            continue
        for key in _TASK_KEYS:
            differ(f"tasks.{name}.{key}", getattr(old[name], key), getattr(new[name], key))
    a = flatten_config({k: v for k, v in saved.to_dict().items() if k not in ("tasks", "limits")})
    b = flatten_config({k: v for k, v in wanted.to_dict().items() if k not in ("tasks", "limits")})
    a["encoder.arch"] = portable_ref(a.get("encoder.arch"))  # saved configs hold the portable name
    b["encoder.arch"] = portable_ref(b.get("encoder.arch"))
    for key in sorted(set(a) | set(b)):
        if key not in _MAY_DIFFER:
            differ(key, a.get(key, "<absent>"), b.get(key, "<absent>"))
    return out


def _build_config(path: Path, wanted: ModelConfig) -> Callable[[ModelConfig], ModelConfig]:
    def build(saved: ModelConfig) -> ModelConfig:
        diffs = incompatibilities(saved, wanted)
        if diffs:
            raise ConfigError(
                f"train.init_from={path}: the saved model does not fit this run's model config: "
                + "; ".join(diffs)
                + ". Use the saved model's architecture (its config.json) or start a fresh run"
            )
        # the same architecture: the run's own config is built (its training knobs apply), and every weight,
        # the encoder's included, comes from the folder
        return wanted

    return build


def load_warm_start(init_from: str, init_sha256: str | None, wanted: ModelConfig) -> tuple[ContextModel, str]:
    """The model a warm-started run trains (on the CPU, in training mode) and the digest of the folder it
    was read from. Raises ModelFolderError for a missing, altered or mis-pinned folder, ConfigError for an
    architecture that differs from ``wanted``."""
    from ximgctx._artifacts import artifact_digest
    from ximgctx.errors import ArtifactError
    from ximgctx.models._serialization import load_model
    from ximgctx.models.encoder import ModelFolderError

    path = Path(init_from)
    if not path.is_dir():
        raise ModelFolderError(f"train.init_from={init_from}: no such model folder")
    try:
        digest = init_sha256 or artifact_digest(path)
    except (ArtifactError, OSError) as e:
        raise ModelFolderError(f"train.init_from={init_from}: not a saved model folder ({e})") from None
    # pinned to the digest recorded in the card: what is loaded is exactly what the digest names
    model = load_model(
        ContextModel,
        path,
        device=torch.device("cpu"),
        verify=True,
        expected_sha256=digest,
        trust_remote_arch_=False,
        build=_build_config(path, wanted),
    )
    model.card = {}  # the parent's card sections describe the parent; the run writes its own
    return model.train(), digest


def portable_init(resolved: dict[str, Any], init_from: str | None, digest: str | None) -> dict[str, Any]:
    """The run's config for the model card: ``train.init_from`` as ``sha256:<digest>``, no local path."""
    if init_from is None or digest is None:
        return resolved
    train = {**resolved.get("train", {}), "init_from": f"sha256:{digest}", "init_sha256": digest}
    return {**resolved, "train": train}


def warm_start_card(init_from: str, digest: str) -> dict[str, Any]:
    """The model-card section of a warm-started model."""
    return {"from": portable_ref(str(Path(init_from).resolve())), "sha256": digest}
