"""Training with Hugging Face Accelerate: fine-tuning (``train``) and contrastive pretraining (``pretrain``).

    from ximgctx.training import train
    result = train("configs/quickstart_train.yaml", overrides=["train.max_steps=100"])
    result.model_dir   # best/ by the validation metric (final/ without validation)

The same code runs as one CPU process, ``torchrun --nproc_per_node N`` and ``accelerate launch``.
"""

from ximgctx.training.checkpoint import CheckpointError, CheckpointManager
from ximgctx.training.config import (
    ContrastiveConfig,
    DataSources,
    ExperimentConfig,
    LearningRates,
    OptimConfig,
    PretrainExperiment,
    TrainConfig,
    load_experiment,
    load_pretrain_experiment,
)
from ximgctx.training.finetune import FinetuneRecipe, train
from ximgctx.training.loop import FitResult, NonFiniteLossError, Recipe, Run, fit
from ximgctx.training.pretrain import ENCODER_WEIGHTS, PretrainRecipe, load_pretrained_export, pretrain
from ximgctx.training.state import TrainState

__all__ = [
    "ENCODER_WEIGHTS",
    "CheckpointError",
    "CheckpointManager",
    "ContrastiveConfig",
    "DataSources",
    "ExperimentConfig",
    "FinetuneRecipe",
    "FitResult",
    "LearningRates",
    "NonFiniteLossError",
    "OptimConfig",
    "PretrainExperiment",
    "PretrainRecipe",
    "Recipe",
    "Run",
    "TrainConfig",
    "TrainState",
    "fit",
    "load_experiment",
    "load_pretrain_experiment",
    "load_pretrained_export",
    "pretrain",
    "train",
]
