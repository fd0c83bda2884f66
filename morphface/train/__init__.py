"""Generic GAN training: ``Trainer`` (torchrun/DDP, AMP, EMA, atomic checkpoints, exact resume,
TensorBoard), the pipeline protocol, the pipeline/dataset registries and ``load_checkpoint``.

Typical use::

    from morphface.train import TrainConfig, Trainer, load_checkpoint

    cfg = TrainConfig.from_yaml("train.yaml")
    Trainer(cfg).fit(resume=True)            # or: morphface train train.yaml --resume
    pipeline = load_checkpoint(cfg.output_dir, ema=True)

Multi-GPU / multi-node: ``torchrun --nproc_per_node 8 -m morphface train train.yaml``.
"""

from .checkpoint import CheckpointInfo, latest_checkpoint, list_checkpoints, load_checkpoint
from .config import ComponentConfig, ConfigError, TrainConfig, load_config, save_config
from .monitor import read_metrics
from .protocol import StepResult, TrainablePipeline
from .registry import (
    build_dataset,
    build_pipeline,
    register_dataset,
    register_pipeline,
    registered_datasets,
    registered_pipelines,
)
from .trainer import Hook, Trainer, TrainSummary

__all__ = [
    "CheckpointInfo",
    "ComponentConfig",
    "ConfigError",
    "Hook",
    "StepResult",
    "TrainConfig",
    "TrainSummary",
    "TrainablePipeline",
    "Trainer",
    "build_dataset",
    "build_pipeline",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "read_metrics",
    "register_dataset",
    "register_pipeline",
    "registered_datasets",
    "registered_pipelines",
    "save_config",
]
