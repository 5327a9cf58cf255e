"""The run config both trainers read: a model YAML with a ``model:`` and a ``train:`` section.

``model:`` is the task's model config (read by ``runtime.loading.read_model_config``, which also
accepts an old flat file); ``train:`` is :class:`TrainConfig` with the same keys for both tasks.
Each task names its own defaults: :class:`TrainConfig` holds the SparseInst paper recipe, a task
may subclass it with other defaults (``semantic.SemanticTrainConfig``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ros_amf.contract.config import ConfigError, from_dict, read_yaml
from ros_amf.runtime.loading import read_model_config


@dataclass
class TrainConfig:
    # optimisation
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"   # adamw/sgd: no weight decay on norms and biases
    lr: float = 5e-5
    weight_decay: float = 0.05
    batch_size: int = 8                 # per process
    max_iters: int = 270_000            # training length; 0 = use epochs
    epochs: float = 0.0                 # training length in epochs when max_iters is 0
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = (210_000, 250_000)   # iterations at which the lr is multiplied by gamma
    milestone_epochs: tuple[float, ...] = ()          # the same in epochs (both lists apply)
    gamma: float = 0.1
    grad_clip: float = 0.0              # 0 = no clipping; NaN/inf steps are skipped either way
    amp: bool = True                    # CUDA only
    max_minutes: float = 0.0            # stop (with a checkpoint) once training took this long; 0 = no limit
    # augmentation (ros_amf.data.transforms.TrainAugmentation)
    min_sizes: tuple[int, ...] = (416, 448, 480, 512, 544, 576, 608, 640)  # short sides, one drawn per batch
    max_size: int | None = 853          # cap on the resized long side; null = none
    scale_range: tuple[float, float] = (1.0, 1.0)     # random factor on the short side, per sample
    # [H, W]: after resizing, train on a random window of this size (smaller images are padded with
    # ignored pixels). Lets a CPU run see objects at native scale for the cost of a smaller image.
    crop: tuple[int, int] | None = None
    hflip: bool = True
    photometric: bool = False           # brightness / contrast / saturation / hue jitter
    # bookkeeping
    checkpoint_every: int = 5000        # OUT/last.pt
    snapshot_every: int = 0             # fp16 OUT/snapshot_<iter>.pt (0 = none)
    log_every: int = 20
    seed: int = 0
    workers: int = 2

    def schedule(self, iters_per_epoch: int) -> tuple[int, list[int]]:
        """(total iterations, lr milestones in iterations) for epochs of ``iters_per_epoch``."""
        total = self.max_iters or int(round(self.epochs * iters_per_epoch))
        milestones = [*self.milestones, *(int(round(e * iters_per_epoch)) for e in self.milestone_epochs)]
        return total, sorted(milestones)


def check_train_config(cfg: TrainConfig, where: str) -> TrainConfig:
    """Raise ConfigError (one sentence) on values from_dict's type check lets through."""
    if cfg.crop is not None and (len(cfg.crop) != 2 or min(cfg.crop) <= 0):
        raise ConfigError(f"{where}: train.crop must be [height, width] in pixels or null, not {list(cfg.crop)}.")
    if len(cfg.scale_range) != 2 or not 0 < cfg.scale_range[0] <= cfg.scale_range[1]:
        raise ConfigError(f"{where}: train.scale_range must be [low, high] with 0 < low <= high, "
                          f"not {list(cfg.scale_range)}.")
    if not cfg.min_sizes or min(cfg.min_sizes) <= 0:
        raise ConfigError(f"{where}: train.min_sizes must list at least one positive short side.")
    if cfg.max_iters <= 0 and cfg.epochs <= 0:
        raise ConfigError(f"{where}: set train.max_iters or train.epochs to a positive training length.")
    if cfg.batch_size <= 0:
        raise ConfigError(f"{where}: train.batch_size must be positive, not {cfg.batch_size}.")
    return cfg


def read_train_config(data: dict[str, Any], cls: type[TrainConfig], where: str) -> TrainConfig:
    """``train:`` mapping -> ``cls``; naming one of max_iters / epochs makes the other unused."""
    if "max_iters" in data and "epochs" in data and data["max_iters"] and data["epochs"]:
        raise ConfigError(f"{where}: give train.max_iters or train.epochs, not both.")
    data = dict(data)
    if data.get("epochs"):
        data.setdefault("max_iters", 0)
    elif data.get("max_iters"):
        data.setdefault("epochs", 0.0)
    return check_train_config(from_dict(cls, data, where=f"{where}:train"), where)


def with_overrides(cfg: TrainConfig, where: str = "command line", **changes: Any) -> TrainConfig:
    """``cfg`` with the given fields replaced (None = keep); max_iters and epochs replace each other."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("max_iters"):
        changes.setdefault("epochs", 0.0)
    elif changes.get("epochs"):
        changes.setdefault("max_iters", 0)
    return check_train_config(dataclasses.replace(cfg, **changes), where)


def load_run_config(path: str | Path, task: str, train_cls: type[TrainConfig] = TrainConfig) -> tuple[Any, TrainConfig]:
    """(model config, train config) of a run YAML; a file without ``train:`` trains with ``train_cls``'s defaults."""
    model_cfg = read_model_config(task, path)
    data = read_yaml(path)
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"config file '{path}': the train section must be a mapping of keys to values.")
    return model_cfg, read_train_config(train, train_cls, str(path))


def iterations_per_epoch(samples: int, batch_size: int, world_size: int) -> int:
    return max(1, math.ceil(samples / (batch_size * world_size)))
