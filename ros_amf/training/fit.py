"""The one training loop: ``fit(task, cfg, out_dir)`` for instance and semantic models alike.

A task (``training.instance.InstanceTask``, ``training.semantic.SemanticTask``) supplies only what
differs: the model and its config, the training reader, the loss, the validation eval and the
metadata its checkpoints carry. Everything else is here, the same for both:

- data: ``ResumableSampler`` order, one short side per batch (``MultiScaleBatches``), the
  augmentation pipeline ``data.transforms.TrainAugmentation`` seeded per (seed, epoch, sample),
  batches from ``data.collate.collate_batch``;
- optimisation: AdamW / Adam / SGD, warm-up then step decay, AMP on CUDA, gradient clipping and
  the NaN guard (``GradientGuard``), DDP under torchrun;
- files in ``out_dir``: ``last.pt`` every ``checkpoint_every`` iterations, at the end and when the
  time limit (``max_minutes``, summed over resumes) stops the run; ``final.pt`` at the end;
  fp16 ``snapshot_<iter>.pt`` every ``snapshot_every``; ``metrics.jsonl/.csv``; ``summary.json``
  (with the validation metrics); the fp16 export ``model.pt`` (and a copy at ``export_to`` with
  its ``.sha256``).

Resuming restores model, optimiser, scheduler, scaler, sampler position, guard and RNG states, so
a resumed run continues the uninterrupted run's curve exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ros_amf.contract.checkpoint import load_checkpoint, load_state_into, save_checkpoint, sha256_of
from ros_amf.contract.config import to_dict
from ros_amf.contract.pixels import PixelNormalisation
from ros_amf.data.collate import SKIP_COUNTS, collate_batch
from ros_amf.data.transforms import AugmentedDataset, TrainAugmentation
from ros_amf.modeling.backbones.pretrained import init_backbone_from_file
from ros_amf.modeling.semantic.model import clear_logit_biases
from ros_amf.runtime.loading import check_device
from ros_amf.training import common
from ros_amf.training.config import TrainConfig, iterations_per_epoch

LossFn = Callable[[dict, dict], dict[str, torch.Tensor]]   # (model outputs, batch) -> terms incl. "loss"


class Task(Protocol):
    name: str                       # checkpoint task: "instance" or "semantic"
    model_config: Any               # the model section (a dataclass), stored in every checkpoint
    class_names: list[str]
    train_set: Any                  # reader: len() and [index] -> sample dict

    def build_model(self) -> nn.Module: ...

    def make_loss(self, device: torch.device) -> LossFn: ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any] | None:
        """Validation metrics of the trained model (left in the mode it came in); None when the
        task has no validation data."""

    def export_meta(self) -> dict[str, Any]:
        """Extra metadata every checkpoint of the run carries (e.g. the semantic class weights)."""


@dataclass
class FitResult:
    model: nn.Module                # the trained model (not DDP-wrapped), on its training device
    iteration: int                  # iterations done, counting those before a resume
    total: int                      # iterations the schedule asked for
    skipped_steps: int              # optimiser steps refused for non-finite loss/gradients
    train_seconds: float            # wall time, summed over resumes
    summary: dict[str, Any] = field(default_factory=dict)   # OUT/summary.json (main process)
    exported: Path | None = None    # OUT/model.pt (main process)

    @property
    def out_of_time(self) -> bool:
        return self.iteration < self.total


def checkpoint_to_resume(out_dir: Path) -> Path:
    """OUT/last.pt; raises FileNotFoundError when there is nothing to resume."""
    path = Path(out_dir) / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: '{path}' does not exist; start without --resume "
                                "or point --out at the run to continue.")
    return path


# what --resume cannot change: the optimiser state, the data position and the draws were made with these
RESUME_FIXED = ("optimizer", "lr", "weight_decay", "batch_size", "seed")


def check_resume_settings(last: Path, cfg: TrainConfig, task_name: str) -> None:
    """One sentence if the resumed run's optimiser, batch size or seed differ from the run's own (they
    would be ignored or corrupt the data position); the length and lr steps may change."""
    stored = (load_checkpoint(last, task=task_name).get("meta") or {}).get("train_config") or {}
    for key in RESUME_FIXED:
        if key in stored and stored[key] != getattr(cfg, key):
            raise ValueError(f"--resume continues '{last}' as it was trained, with {key} {stored[key]!r}, but "
                             f"{key} is now {getattr(cfg, key)!r}; resume with the run's own value, or start a "
                             f"new run with --init {last} to change it.")


def check_fresh_out(out_dir: Path) -> None:
    """A run folder that holds a run is continued with --resume, never silently overwritten."""
    if (Path(out_dir) / "last.pt").is_file():
        raise ValueError(f"'{out_dir}' already holds a training run (last.pt); pass --resume to continue it, or "
                         "choose another --out (or delete the folder) to start again.")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = common.param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def augmentation_of(cfg: TrainConfig) -> TrainAugmentation:
    return TrainAugmentation(short_sides=tuple(cfg.min_sizes), max_long_side=cfg.max_size,
                             scale_range=tuple(cfg.scale_range), crop_hw=tuple(cfg.crop) if cfg.crop else None,
                             hflip=cfg.hflip, photometric=cfg.photometric)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any process: every rank must stop at the same iteration."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def stored_pixels(payload: dict) -> PixelNormalisation | None:
    """The pixel normalisation a checkpoint's weights were trained with (None if it records none)."""
    stored = (payload.get("model_config") or {}).get("pixel_normalisation")
    return PixelNormalisation(tuple(stored["mean"]), tuple(stored["std"])) if stored else None


def use_pixels(task: Task, model: nn.Module, pixels: PixelNormalisation | None) -> None:
    """Make ``pixels`` the run's normalisation everywhere it is read: the batches and every checkpoint
    (task.model_config) and the end-of-run validation, which reads the model's own config (pixels_of)."""
    if pixels is None:
        return
    task.model_config = dataclasses.replace(task.model_config, pixel_normalisation=pixels)
    for part in (model, getattr(model, "instance", None), getattr(model, "semantic", None)):
        cfg = getattr(part, "cfg", None)
        if cfg is not None and hasattr(cfg, "pixel_normalisation"):
            part.cfg = dataclasses.replace(cfg, pixel_normalisation=pixels)


def fit(task: Task, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, init: str | Path | None = None,
        device: str | None = None, progress: bool = True, meta: dict[str, Any] | None = None,
        export_to: str | Path | None = None) -> FitResult:
    """Train ``task`` with ``cfg``; ``resume`` continues OUT/last.pt, ``init`` starts from a
    checkpoint's weights with a fresh optimiser and schedule (fine-tuning)."""
    out_dir = Path(out_dir)
    if device:
        check_device(device)   # one sentence for "cuda" without CUDA, never a silent fall-back to the CPU
    if resume:
        last = checkpoint_to_resume(out_dir)
        check_resume_settings(last, cfg, task.name)
    else:
        check_fresh_out(out_dir)
        last = out_dir / "last.pt"
    dist = common.init_distributed(prefer_cuda=device != "cpu")
    torch_device = torch.device(device) if device and device != "cuda" else dist.device
    common.seed_everything(cfg.seed + dist.rank)
    model = task.build_model()
    if init and not resume:
        started_from = load_checkpoint(init, task=task.name)
        load_state_into(model, started_from, init)
        clear_logit_biases(model)
        use_pixels(task, model, stored_pixels(started_from))   # the init weights' normalisation, not the YAML's
    elif task.model_config.backbone_weights and not resume:
        # a fresh run on pretrained weights: the weights say how a pixel must be normalised
        use_pixels(task, model, init_backbone_from_file(model, task.model_config.backbone_weights))
    model = model.to(torch_device)
    ddp_model = common.wrap_ddp(model, dist)
    optimizer = make_optimizer(model, cfg)
    total, milestones = cfg.schedule(iterations_per_epoch(len(task.train_set), cfg.batch_size, dist.world_size))
    scheduler = common.warmup_step_scheduler(optimizer, cfg.warmup_iters, milestones, cfg.gamma, cfg.warmup_factor)
    use_amp = common.amp_enabled(torch_device, cfg.amp)
    scaler = common.make_grad_scaler(torch_device, use_amp)
    guard = common.GradientGuard(cfg.grad_clip)
    sampler = common.ResumableSampler(len(task.train_set), cfg.seed, True, dist.rank, dist.world_size)
    start, previous_seconds = 0, 0.0
    if resume:
        payload = common.load_training_checkpoint(last, task=task.name, model=model, optimizer=optimizer,
                                                  scheduler=scheduler, scaler=scaler, sampler=sampler, guard=guard)
        start = payload["train_state"]["iteration"]
        use_pixels(task, model, stored_pixels(payload))   # what the run was started with (pretrained weights)
        previous_seconds = float(payload["meta"].get("train_seconds", 0.0))  # the time limit spans resumes
    loss_fn = task.make_loss(torch_device)
    logger = common.MetricLogger(out_dir, resume_iteration=start if resume else None, enabled=dist.is_main)
    batches = common.MultiScaleBatches(sampler, cfg.batch_size, tuple(cfg.min_sizes), cfg.seed, first_batch=start)
    loader = torch.utils.data.DataLoader(AugmentedDataset(task.train_set, augmentation_of(cfg), cfg.seed),
                                         batch_sampler=batches,
                                         collate_fn=functools.partial(collate_batch,
                                                                      pixels=task.model_config.pixel_normalisation), num_workers=cfg.workers,
                                         # own generator: starting the loader must not draw from the global
                                         # RNG, or a resumed run's dropout would differ from the original's
                                         generator=torch.Generator().manual_seed(cfg.seed))
    run_meta = {**(meta or {}), **task.export_meta(), "train_config": to_dict(cfg)}
    iteration, train_seconds = start, previous_seconds

    def meta_now(**extra: Any) -> dict[str, Any]:
        return {**run_meta, "iteration": iteration, "train_seconds": train_seconds, **extra}

    def save(path: Path) -> None:
        rng_per_rank = common.gather_rng_states()   # every rank takes part; rank 0 writes
        if dist.is_main:
            common.save_training_checkpoint(
                path, task=task.name, model=model, model_config=to_dict(task.model_config),
                class_names=list(task.class_names), optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                iteration=iteration, guard=guard, meta=meta_now(),
                # the loader prefetches: record the position of the last batch actually trained on
                sampler_state=sampler.state_after(iteration * cfg.batch_size), rng_per_rank=rng_per_rank)

    def export(path: str | Path, **extra: Any) -> Path:
        # a shippable file: fp16 weights, no optimiser state
        return save_checkpoint(path, task=task.name, model_config=to_dict(task.model_config),
                               class_names=list(task.class_names), state_dict=model.state_dict(), half=True,
                               meta=meta_now(**extra))

    ddp_model.train()
    bar = common.progress(total, start, progress and dist.is_main, f"train {task.name}")
    started, tic = time.monotonic() - previous_seconds, time.perf_counter()
    stream = iter(loader)
    skipped_data = dict.fromkeys(SKIP_COUNTS, 0)   # what the readers could not use, reported at the end
    while iteration < total:
        batch = next(stream)
        for key, count in batch.get("skipped_data", {}).items():
            skipped_data[key] += count
        images = batch["images"].to(torch_device, non_blocking=True)
        with common.autocast(torch_device, use_amp):
            outputs = ddp_model(images)
        losses = loss_fn(outputs, batch)  # outside autocast: the losses want float32 (or more)
        scaler.scale(losses["loss"]).backward()
        grad_norm = guard.step(ddp_model, optimizer, scaler, losses["loss"])
        scheduler.step()
        iteration += 1
        bar.update(1)
        train_seconds = time.monotonic() - started
        out_of_time = bool(cfg.max_minutes) and _any_rank(train_seconds > cfg.max_minutes * 60, torch_device)
        if iteration % cfg.log_every == 0 or iteration == total:
            row = {"iter": iteration, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                   "skipped_steps": guard.skipped, "short_side": int(images.shape[-2]),
                   "sec_per_iter": (time.perf_counter() - tic) / cfg.log_every, "seconds": round(train_seconds, 1)}
            row.update({k: float(common.all_reduce_mean(v.detach())) for k, v in losses.items()})
            logger.log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            tic = time.perf_counter()
        # the snapshot first: a run killed between the two resumes from before it and writes it again
        if cfg.snapshot_every and iteration % cfg.snapshot_every == 0 and dist.is_main:
            export(out_dir / f"snapshot_{iteration:06d}.pt")
        if iteration % cfg.checkpoint_every == 0 or iteration == total or out_of_time:
            save(last)
        if out_of_time:
            break
    bar.close()
    save(out_dir / "final.pt")
    result = FitResult(model=model, iteration=iteration, total=total, skipped_steps=guard.skipped,
                       train_seconds=train_seconds)
    if not dist.is_main:
        return result
    result.summary = {"iterations": iteration, "skipped_steps": guard.skipped}
    if any(skipped_data.values()):   # this process's batches (a resumed run counts from its restart)
        result.summary["skipped_data"] = skipped_data
    validation = task.evaluate(model, torch_device)
    if validation is not None:
        result.summary["val"] = validation
    (out_dir / "summary.json").write_text(json.dumps(result.summary, indent=2))
    result.exported = export(out_dir / "model.pt", **result.summary)
    if export_to:
        path = Path(export(export_to, **result.summary))
        path.with_suffix(".sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    return result
