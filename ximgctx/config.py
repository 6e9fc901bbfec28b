"""Typed configuration for a context model.

Every field carries a comment saying what it controls; ``__post_init__`` validates values and names the
bad one. Configs round-trip through plain dicts (``to_dict`` / ``from_dict``), which is how they are saved
in ``config.json`` beside the weights and how YAML experiment files are read. Unknown keys are errors,
not silently ignored, so a typo in a YAML file fails loudly with its dotted path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ximgctx.errors import ConfigError

__all__ = [
    "read_yaml",
    "ConfigError",
    "DataConfig",
    "EncoderConfig",
    "FusionConfig",
    "LoraSpec",
    "ModelConfig",
    "TaskSpec",
    "config_from_dict",
    "config_to_dict",
    "flatten_config",
]

T = TypeVar("T")

#: the libraries an encoder can be built with (``ximgctx.models.backends.ENCODERS`` has one class each)
EncoderBackend = Literal["open_clip", "transformers"]
ENCODER_BACKENDS: tuple[str, ...] = typing.get_args(EncoderBackend)
LORA_PRESETS = ("attn", "mlp", "conv", "embed", "all")
MODALITIES = ("image", "text", "replies")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class EncoderConfig:
    """Which CLIP-family model encodes images and texts, and where its weights come from.

    ``backend="open_clip"``: ``arch`` is an open_clip architecture, ``pretrained`` a tag, a weights file or
    None (random). ``backend="transformers"``: ``arch`` is a Hugging Face ``CLIPModel`` / ``SiglipModel``
    checkpoint (a hub repo id or a local folder) whose own weights, tokenizer and image processor are used;
    ``pretrained`` must stay None there.
    """

    arch: str = "ximgctx-tiny"  # open_clip architecture, or (transformers) a hub repo id / checkpoint folder
    # open_clip: a pretrained tag (laion2b_s34b_b79k), a local weights file, or None (random)
    pretrained: str | None = None
    cache_dir: str | None = None  # where downloaded weights are cached (the library's default when None)
    # freeze base encoder weights (LoRA, if set, still trains); False fine-tunes everything
    freeze: bool = True
    grad_checkpointing: bool = False  # trade compute for memory in both towers during training
    backend: EncoderBackend = "open_clip"  # which library builds the towers: open_clip | transformers
    revision: str | None = None  # transformers: hub revision (branch, tag or commit) of arch; None = main

    def __post_init__(self) -> None:
        _check(
            isinstance(self.arch, str) and bool(self.arch.strip()),
            f"encoder.arch must be a non-empty string, got {self.arch!r}",
        )
        _check(
            self.pretrained is None or (isinstance(self.pretrained, str) and bool(self.pretrained.strip())),
            f"encoder.pretrained must be a tag, a path or null, got {self.pretrained!r}",
        )
        _check(
            self.backend in ENCODER_BACKENDS,
            f"encoder.backend must be one of {list(ENCODER_BACKENDS)}, got {self.backend!r}",
        )
        _check(
            self.backend == "transformers" or self.revision is None,
            f"encoder.revision is for the transformers backend only, got {self.revision!r}",
        )
        _check(
            self.backend == "open_clip" or self.pretrained is None,
            f"encoder.pretrained must be null with backend=transformers (weights come from encoder.arch="
            f"{self.arch!r}, a hub repo id or checkpoint folder), got {self.pretrained!r}",
        )


@dataclass
class LoraSpec:
    """Low-rank adapters on the encoder, injected with peft (translated to peft's own ``LoraConfig`` by
    :func:`ximgctx.models.lora.peft_config`)."""

    r: int = 8  # rank of each adapter
    alpha: float = 16.0  # scaling numerator: the update is (alpha / r) * B @ A
    dropout: float = 0.0  # dropout on the adapter input
    targets: list[str] = field(
        default_factory=lambda: ["attn", "mlp"]
    )  # presets (attn, mlp, conv, embed, all) or module names
    towers: list[str] = field(default_factory=lambda: ["image", "text"])  # which towers get adapters

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and self.r > 0, f"lora.r must be a positive integer, got {self.r!r}")
        _check(self.alpha > 0, f"lora.alpha must be positive, got {self.alpha!r}")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        _check(bool(self.targets), "lora.targets must name at least one preset or module")
        bad = [t for t in self.towers if t not in ("image", "text")]
        _check(
            not bad and bool(self.towers),
            f"lora.towers must be a non-empty subset of ['image', 'text'], got {self.towers!r}",
        )
        self.targets = list(self.targets)
        self.towers = list(self.towers)


#: The fusion strategies; :data:`ximgctx.models.fusion.FUSIONS` maps each to its class (a test keeps
#: them equal).
FusionKind = Literal["concat", "cross", "attention"]
FUSION_KINDS: tuple[str, ...] = typing.get_args(FusionKind)


@dataclass
class FusionConfig:
    """How the image, post text and reply embeddings are fused into one vector."""

    kind: FusionKind = (
        "attention"  # concat | cross | attention (ximgctx.models.fusion.FUSIONS has one class each)
    )
    hidden_dim: int = 256  # width of the fused vector and of the fusion MLP / transformer
    dropout: float = 0.1  # dropout inside the fusion module
    cross_dim: int = 64  # cross, attention's interaction: size d of the projected image/text features (d x d)
    # cross, attention's interaction: low-rank interaction of this rank instead of d x d
    cross_rank: int | None = None
    # attention: add a token holding the image x text feature interaction (cross_dim, cross_rank)
    interaction: bool = True
    layers: int = 2  # attention: transformer layers over [CLS, image, text, replies]
    heads: int = 4  # attention: attention heads (must divide hidden_dim)
    modality_dropout: float = 0.0  # training only: chance of replacing each modality by its null embedding

    def __post_init__(self) -> None:
        _check(
            self.kind in FUSION_KINDS, f"fusion.kind must be one of {sorted(FUSION_KINDS)}, got {self.kind!r}"
        )
        _check(self.hidden_dim > 0, f"fusion.hidden_dim must be positive, got {self.hidden_dim!r}")
        _check(0.0 <= self.dropout < 1.0, f"fusion.dropout must be in [0, 1), got {self.dropout!r}")
        _check(self.cross_dim > 0, f"fusion.cross_dim must be positive, got {self.cross_dim!r}")
        _check(
            self.cross_rank is None or self.cross_rank > 0,
            f"fusion.cross_rank must be positive or null, got {self.cross_rank!r}",
        )
        _check(self.layers > 0, f"fusion.layers must be positive, got {self.layers!r}")
        _check(
            self.heads > 0 and self.hidden_dim % self.heads == 0,
            f"fusion.heads must divide fusion.hidden_dim={self.hidden_dim}, got {self.heads!r}",
        )
        _check(
            0.0 <= self.modality_dropout < 1.0,
            f"fusion.modality_dropout must be in [0, 1), got {self.modality_dropout!r}",
        )


@dataclass
class TaskSpec:
    """One prediction task and its head."""

    name: str  # task name, the key under a post's "labels"
    labels: list[str]  # the label vocabulary, in output order
    kind: Literal["multiclass", "multilabel"] = "multiclass"  # softmax over labels, or independent sigmoids
    # the head reads the fused vector, or the image embedding alone
    source: Literal["fused", "image"] = "fused"
    prompt: str | None = None  # image heads: a template like "a photo of a {}." for zero-shot initialisation
    weight: float = 1.0  # weight of this task's loss in the total

    def __post_init__(self) -> None:
        _check(
            isinstance(self.name, str) and self.name.isidentifier(),
            f"task name must be an identifier-like string, got {self.name!r}",
        )
        self.labels = list(self.labels)
        _check(
            len(self.labels) >= 1 and all(isinstance(x, str) and x for x in self.labels),
            f"task {self.name!r}: labels must be non-empty strings, got {self.labels!r}",
        )
        dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
        _check(not dup, f"task {self.name!r}: duplicate labels {dup}")
        _check(
            self.kind in ("multiclass", "multilabel"),
            f"task {self.name!r}: kind must be 'multiclass' or 'multilabel', got {self.kind!r}",
        )
        _check(
            self.kind != "multiclass" or len(self.labels) >= 2,
            f"task {self.name!r}: a multiclass task needs at least 2 labels, got {self.labels!r}",
        )
        _check(
            self.source in ("fused", "image"),
            f"task {self.name!r}: source must be 'fused' or 'image', got {self.source!r}",
        )
        _check(
            self.prompt is None or "{}" in self.prompt,
            f"task {self.name!r}: prompt must contain '{{}}' where the label goes, got {self.prompt!r}",
        )
        _check(self.weight >= 0, f"task {self.name!r}: weight must be non-negative, got {self.weight!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass
class DataConfig:
    """How posts become tensors: caps that keep adversarial inputs cheap."""

    # replies kept per post (the first ones in display order); more are dropped with a warning
    max_replies: int = 8
    max_text_chars: int = 2000  # post text is capped to this many characters before tokenizing
    max_reply_chars: int = 500  # each reply is capped to this many characters before tokenizing
    image_max_pixels: int = 40_000_000  # images whose header claims more pixels are refused before decoding
    image_max_bytes: int = 64 * 1024 * 1024  # image files larger than this are refused before reading

    def __post_init__(self) -> None:
        _check(self.max_replies >= 0, f"limits.max_replies must be >= 0, got {self.max_replies!r}")
        _check(
            self.max_text_chars > 0, f"limits.max_text_chars must be positive, got {self.max_text_chars!r}"
        )
        _check(
            self.max_reply_chars > 0, f"limits.max_reply_chars must be positive, got {self.max_reply_chars!r}"
        )
        _check(
            self.image_max_pixels > 0,
            f"limits.image_max_pixels must be positive, got {self.image_max_pixels!r}",
        )
        _check(
            self.image_max_bytes > 0, f"limits.image_max_bytes must be positive, got {self.image_max_bytes!r}"
        )


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`~ximgctx.ContextModel`."""

    tasks: list[TaskSpec]  # the heads
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    lora: LoraSpec | None = None  # None: no adapters (encoder frozen or fully trained per encoder.freeze)
    limits: DataConfig = field(default_factory=DataConfig)  # input caps: replies, characters, image size

    def __post_init__(self) -> None:
        self.tasks = [
            t if isinstance(t, TaskSpec) else config_from_dict(TaskSpec, t, "tasks") for t in self.tasks
        ]
        _check(len(self.tasks) > 0, "model config needs at least one task")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        _check(not dup, f"duplicate task names {dup}")

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r}; tasks are {[t.name for t in self.tasks]}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return config_from_dict(cls, d)


def config_to_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON/YAML-able values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: config_to_dict(v) for k, v in obj.items()}
    return obj


def flatten_config(obj: Any) -> dict[str, Any]:
    """A nested config (dataclasses and/or dicts) as one flat dict with dotted keys, in field order.

    ``{"train": {"lr": {"lora": 1e-4}}, "seed": 0}`` -> ``{"train.lr.lora": 1e-4, "seed": 0}``. Leaves keep
    their values (lists stay lists); an empty mapping has no leaves and adds no key. Used to compare a
    checkpoint's config with a resuming run's and to log hyperparameters.
    """
    data = config_to_dict(obj)
    if not isinstance(data, dict):
        raise ConfigError(f"flatten_config takes a config dataclass or a mapping, got {type(obj).__name__}")
    out: dict[str, Any] = {}

    def walk(node: dict[Any, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(data, "")
    return out


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path)
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, path)
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {type(value).__name__}")
        key_field = getattr(args[1], "_KEY_FIELD", None)  # the entry's key fills this field (a rule's name)
        return {
            k: config_from_dict(
                args[1], {**v, key_field: str(k)} if key_field and isinstance(v, dict) else v, f"{path}.{k}"
            )
            for k, v in value.items()
        }
    if origin is list and args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {type(value).__name__}")
        return [config_from_dict(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{path} must be {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{path} must be int, got {value!r}")
    return value


def config_from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build a dataclass config from a dict, naming any unknown key or bad value by its dotted path."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config keys {[where + k for k in unknown]}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from e


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The one reader of every YAML file ximgctx takes (experiment and quickstart configs, moderation and
    governance policies): a mapping read with :func:`ximgctx._yaml.safe_load`, errors naming the file."""
    import yaml

    import ximgctx._yaml as _yaml

    path = Path(path)
    try:
        data = _yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such {what}") from e
    except IsADirectoryError as e:
        raise ConfigError(f"{path}: is a folder, not a {what}") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} holds a mapping at the top level, got {type(data).__name__}")
    return data
