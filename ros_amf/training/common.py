"""Training utilities shared by the instance and semantic trainers.

API (all plain functions/classes, no global state besides what torch.distributed keeps):

- ``seed_everything(seed)``: seeds python, numpy and torch (CPU and CUDA).
- ``init_distributed() -> DistInfo``: reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK; without them a
  single-process no-op (``DistInfo(rank=0, world_size=1, ...)``). ``DistInfo.device`` is the
  device this process should use (cuda:LOCAL_RANK when CUDA exists, else cpu).
  ``wrap_ddp(model, dist_info)`` wraps in DistributedDataParallel only when world_size > 1.
- ``param_groups(model, weight_decay)``: two AdamW groups; norms (BatchNorm/GroupNorm/LayerNorm)
  and all biases get weight_decay 0.
- ``warmup_step_scheduler(optimizer, warmup_iters, milestones, gamma=0.1, warmup_factor=0.001)``:
  LambdaLR: linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters`` iterations, then
  multiplied by ``gamma`` at each milestone iteration. Step it once per iteration.
- ``GradientGuard(max_norm)``: ``guard.step(model, optimizer, scaler)`` unscales, clips the
  gradient norm (``max_norm`` <= 0 disables clipping), and skips the optimizer step when the
  loss/gradients are NaN/inf, counting ``guard.skipped``. Returns the gradient norm.
- ``amp_enabled(device)`` / ``autocast(device, enabled)`` / ``make_grad_scaler(device, enabled)``:
  mixed precision on CUDA only; on CPU they are no-ops so the same loop runs everywhere.
- ``ResumableSampler(size, seed, shuffle, rank, world_size)``: an infinite, deterministic stream
  of dataset indices (a new permutation per epoch from ``seed + epoch``), sharded by rank; its
  ``state_dict()``/``load_state_dict()`` record the exact position so a resumed run sees the same
  data order (``state_after(consumed)`` for loaders that prefetch ahead of the loop).
- ``MultiScaleBatches(sampler, batch_size, short_sides, seed, first_batch)``: batches of
  ``(index, epoch, short_side)`` keys for ``data.transforms.AugmentedDataset``, one short side
  per batch drawn from (seed, batch number), so a resumed run draws the same sizes.
- ``capture_rng_state()`` / ``restore_rng_state(state)``: python/numpy/torch(/cuda) RNG states.
- ``save_training_checkpoint(path, ...)`` / ``load_training_checkpoint(path, model, ...)``:
  atomic checkpoint (via ros_amf.contract.checkpoint) holding model, optimizer, scheduler, scaler,
  iteration, sampler position, RNG states and guard counters; loading restores all of them.
- ``MetricLogger(out_dir, resume_iteration=None, enabled=True)``: appends one row per logged
  iteration to ``metrics.jsonl`` and ``metrics.csv`` (every loss term a column); on resume it
  drops rows written after the checkpoint it resumes from, so the curve has no duplicates.
- ``progress(total, initial, enabled, desc)``: a tqdm bar (disabled on non-main ranks).
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ros_amf.contract.checkpoint import load_checkpoint, save_checkpoint

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.InstanceNorm2d)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(prefer_cuda: bool = True) -> DistInfo:
    """Join the torchrun process group when torchrun's environment variables are set."""
    use_cuda = prefer_cuda and torch.cuda.is_available()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(device=torch.device("cuda:0" if use_cuda else "cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def wrap_ddp(model: nn.Module, dist_info: DistInfo) -> nn.Module:
    if dist_info.world_size <= 1:
        return model
    if dist_info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[dist_info.local_rank])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return value


# ---------------------------------------------------------------- optimisation
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on normalisation parameters and biases."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES) or name == "bias" or param.ndim <= 1:
                no_decay.append(param)
            else:
                decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_step_scheduler(optimizer: torch.optim.Optimizer, warmup_iters: int, milestones: list[int] | tuple[int, ...],
                          gamma: float = 0.1, warmup_factor: float = 0.001) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then step decay, as a per-iteration multiplier of the base LR."""
    steps = sorted(int(m) for m in milestones)

    def factor(iteration: int) -> float:
        scale = gamma ** sum(iteration >= m for m in steps)
        if warmup_iters > 0 and iteration < warmup_iters:
            alpha = iteration / warmup_iters
            scale *= warmup_factor * (1 - alpha) + alpha
        return scale

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class GradientGuard:
    """Clip the gradient norm and refuse steps whose loss or gradients are not finite."""

    def __init__(self, max_norm: float = 0.0):
        self.max_norm = max_norm
        self.skipped = 0

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
             loss: torch.Tensor | None = None) -> float:
        params = [p for p in model.parameters() if p.grad is not None]
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(optimizer)
        if self.max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])) if params \
                else torch.tensor(0.0)
        loss_finite = loss is None or bool(torch.isfinite(loss.detach()))
        finite = bool(torch.isfinite(norm)) and loss_finite
        if scaler is not None and scaler.is_enabled():
            if finite:
                scaler.step(optimizer)
            elif not loss_finite or scaler.get_scale() < 1.0:
                # below a scale of 1 the scaler shrinks the gradients: what is still not finite did not
                # overflow, it is a real NaN/inf gradient, and the scaler would back off for ever unseen
                self.skipped += 1
            # else: a finite loss whose scaled gradients overflowed: the scaler's own back-off (it lowers its
            # scale and the step is skipped), routine in fp16 and not a non-finite step
            scaler.update()
        elif finite:
            optimizer.step()
        else:
            self.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))


def amp_enabled(device: torch.device, requested: bool = True) -> bool:
    return requested and device.type == "cuda"


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


def make_grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


# ---------------------------------------------------------------- data order
class ResumableSampler(torch.utils.data.Sampler):
    """Endless deterministic index stream: epoch e is permutation(seed + e), sharded by rank.

    Yields ``(index, epoch)`` pairs so datasets can seed each sample's augmentation by epoch.
    ``state_dict`` is the number of indices already consumed in the current epoch; restoring
    it continues exactly where the checkpointed run was (the loader must then be recreated).
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise ValueError("the training set is empty; check the data path and split.")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world_size)
        order = (order * (self.world_size + 1))[:per_rank * self.world_size]  # pad so every rank has as many
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while True:
            order = self._order(self.epoch)
            while self.position < len(order):
                index = order[self.position]
                self.position += 1
                yield index, self.epoch
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def state_after(self, consumed: int) -> dict[str, int]:
        """Sampler state once ``consumed`` indices have been drawn from the start (use this, not
        ``state_dict``, when a DataLoader prefetches: it pulls indices ahead of the training loop)."""
        per_epoch = len(self._order(0))
        return {"epoch": consumed // per_epoch, "position": consumed % per_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class MultiScaleBatches(torch.utils.data.Sampler):
    """Batches of (index, epoch, short_side); the short side is drawn per batch from (seed, batch number)."""

    def __init__(self, sampler: ResumableSampler, batch_size: int, short_sides: tuple[int, ...], seed: int,
                 first_batch: int = 0):
        self.sampler, self.batch_size, self.short_sides, self.seed = sampler, batch_size, short_sides, seed
        self.first_batch = first_batch

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        stream = iter(self.sampler)
        batch_number = self.first_batch
        while True:
            generator = torch.Generator().manual_seed(self.seed * 7_919 + batch_number)
            short = self.short_sides[int(torch.randint(len(self.short_sides), (1,), generator=generator))]
            yield [(index, epoch, short) for index, epoch in (next(stream) for _ in range(self.batch_size))]
            batch_number += 1


# ---------------------------------------------------------------- RNG + checkpoints
def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather_rng_states() -> list[dict[str, Any]] | None:
    """Every rank's RNG state, rank by rank, under DDP (a collective: every rank must call it); None otherwise.
    Each rank draws its own dropout and noise: a resume must give each its own state back, not rank 0's."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, capture_rng_state())
    return states


def restore_own_rng_state(state: dict[str, Any]) -> None:
    """This rank's saved RNG state. A checkpoint without one per rank (single-process, or another world size)
    gives rank 0's; the other ranks then re-seed from it plus their rank, so they do not all draw alike."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    per_rank = state.get("rng_per_rank")
    if per_rank and len(per_rank) == world:
        restore_rng_state(per_rank[rank])
        return
    restore_rng_state(state["rng"])
    if rank > 0:
        seed_everything(int(torch.randint(0, 2 ** 31, (1,))) + rank)


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: str | Path, *, task: str, model: nn.Module, model_config: dict[str, Any],
                             class_names: list[str], optimizer: torch.optim.Optimizer,
                             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                             iteration: int, sampler: ResumableSampler | None = None,
                             guard: GradientGuard | None = None, meta: dict[str, Any] | None = None,
                             sampler_state: dict[str, int] | None = None,
                             rng_per_rank: list[dict[str, Any]] | None = None) -> Path:
    """Atomic checkpoint of everything a resumed run needs to continue the same curve.

    ``sampler_state`` overrides ``sampler.state_dict()`` (use the position of the last batch
    actually consumed when a loader prefetches ahead of the training loop). ``rng_per_rank``: every
    rank's RNG state (``gather_rng_states``) under DDP, where only rank 0 writes the file.
    """
    train_state = {
        "iteration": iteration,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "sampler": sampler_state if sampler_state is not None else (sampler.state_dict() if sampler else None),
        "guard": guard.state_dict() if guard is not None else None,
        "rng": capture_rng_state(),
        "rng_per_rank": rng_per_rank,
    }
    return save_checkpoint(path, task=task, model_config=model_config, class_names=class_names,
                           state_dict=unwrap(model).state_dict(), train_state=train_state, meta=meta)


def load_training_checkpoint(path: str | Path, *, task: str, model: nn.Module,
                             optimizer: torch.optim.Optimizer | None = None,
                             scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                             scaler: torch.amp.GradScaler | None = None, sampler: ResumableSampler | None = None,
                             guard: GradientGuard | None = None) -> dict[str, Any]:
    """Restore a training checkpoint in place; returns the payload (``train_state['iteration']``)."""
    from ros_amf.contract.checkpoint import CheckpointError, load_state_into
    payload = load_checkpoint(path, task=task)
    load_state_into(unwrap(model), payload, path)
    state = payload.get("train_state")
    if state is None:
        raise CheckpointError(f"checkpoint '{path}' has no training state (it is an exported model); "
                              "resume from a checkpoint in the run's output directory instead.")
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if sampler is not None and state.get("sampler"):
        sampler.load_state_dict(state["sampler"])
    if guard is not None and state.get("guard"):
        guard.load_state_dict(state["guard"])
    restore_own_rng_state(state)
    return payload


# ---------------------------------------------------------------- logging
class MetricLogger:
    """Every logged iteration becomes one JSON line and one CSV row (all loss terms as columns)."""

    def __init__(self, out_dir: str | Path, resume_iteration: int | None = None, enabled: bool = True):
        self.enabled = enabled
        self.jsonl = Path(out_dir) / "metrics.jsonl"
        self.csv = Path(out_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        if not enabled:
            return
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if resume_iteration is not None and self.jsonl.exists():
            kept = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            self.rows = [row for row in kept if row.get("iter", 0) <= resume_iteration]
        self.jsonl.write_text("".join(json.dumps(row) + "\n" for row in self.rows))
        self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        self.columns = []
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        with open(self.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: (float(v) if isinstance(v, (torch.Tensor, np.floating)) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if any(k not in self.columns for k in row):
            self._rewrite_csv()  # a new loss term appeared: the header must grow
        else:
            with open(self.csv, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.columns).writerow(row)


def progress(total: int, initial: int = 0, enabled: bool = True, desc: str = "train") -> tqdm:
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)
