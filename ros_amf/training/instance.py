"""``ros-amf train instance``: train SparseInst / AMF-SparseInst.

    ros-amf train instance --config models/amf_sparseinst_r18_slim.yaml --data DATA/coco --out runs/amf
    torchrun --nproc-per-node 8 -m ros_amf.apps.cli train instance --config ... (DDP)
    ros-amf train instance ... --resume            (continue runs/amf/last.pt with the same curve)

The YAML has a ``model:`` section (InstanceModelConfig) and a ``train:`` section (TrainConfig).
Defaults of TrainConfig are the paper's recipe (AdamW lr 5e-5, wd 0.05 without decay on norms,
linear warm-up then step decay, multi-scale short side 416..640). The model's ``num_classes`` is
taken from the data set.

Data order, multi-scale choice and augmentation are functions of (seed, iteration, sample), and
the checkpoint stores model, optimizer, scheduler, scaler and RNG states, so a resumed run gives
the same loss curve as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, load_state_into
from ros_amf.contract.config import ConfigError, from_dict, read_yaml, to_dict
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
from ros_amf.modeling.sparseinst.loss import SparseInstLoss
from ros_amf.data.collate import collate_batch
from ros_amf.data.errors import DatasetFileError
from ros_amf.data.transforms import HorizontalFlip, RandomCrop, resize_crop_sample, resize_sample
from ros_amf.training import common


@dataclass
class TrainConfig:
    lr: float = 5e-5
    weight_decay: float = 0.05
    batch_size: int = 8                 # per process
    max_iters: int = 270_000
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = (210_000, 250_000)
    gamma: float = 0.1
    min_sizes: tuple[int, ...] = (416, 448, 480, 512, 544, 576, 608, 640)  # multi-scale short sides
    max_size: int = 853
    # [H, W]: after the multi-scale resize, train on a random window of this size. Lets a CPU run
    # see objects at (or above) native scale for the cost of a smaller image; null = whole image.
    crop: tuple[int, int] | None = None
    hflip: bool = True
    grad_clip: float = 0.0              # 0 = no clipping; NaN/inf steps are skipped either way
    amp: bool = True                    # CUDA only
    checkpoint_every: int = 5000
    log_every: int = 20
    seed: int = 0
    workers: int = 2


# ---------------------------------------------------------------- data
def open_dataset(fmt: str, root: str, split: str):
    """The data helper's readers; returns (dataset, class names of its contiguous instance ids)."""
    if fmt == "coco":
        from ros_amf.data.datasets.coco import CocoInstances
        dataset = CocoInstances(Path(root) / "images" / split, Path(root) / "annotations" / f"instances_{split}.json")
        return dataset, list(dataset.class_names)
    if fmt == "cityscapes":
        from ros_amf.data.datasets.cityscapes import CityscapesDataset
        dataset = CityscapesDataset(root, split, instances=True)
        return dataset, list(dataset.instance_class_names)
    raise ValueError(f"--format {fmt} is unknown; use coco or cityscapes.")


class TrainSamples(torch.utils.data.Dataset):
    """Indexable by (index, epoch, short_side): read, resize (short side, long side capped), crop, flip.

    The flip is drawn from a generator seeded by (seed, epoch, index), so augmentation does not
    depend on loader workers. Crowd regions (``ignore_mask``) are not used by the loss; the
    synthetic data has none.
    """

    def __init__(self, dataset, cfg: TrainConfig):
        self.dataset, self.cfg = dataset, cfg
        self.flip = HorizontalFlip(0.5 if cfg.hflip else 0.0)
        self.crop = RandomCrop(tuple(cfg.crop)) if cfg.crop else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        index, epoch, short_side = key
        rng = np.random.default_rng(common.sample_seed(self.cfg.seed, epoch, index))
        sample = self.dataset[index]
        height, width = sample["image"].shape[:2]
        scale = min(short_side / min(height, width), self.cfg.max_size / max(height, width))
        size_wh = (max(1, round(width * scale)), max(1, round(height * scale)))
        if self.crop is None:
            sample = resize_sample(sample, size_wh)
        else:  # same window as resize-then-crop, but only the window is resized
            sample = resize_crop_sample(sample, size_wh, *self.crop.window(size_wh[1], size_wh[0], rng))
        return self.flip(sample, rng)


class MultiScaleBatches(torch.utils.data.Sampler):
    """Batches of (index, epoch, short_side); the short side is drawn per batch from (seed, batch number)."""

    def __init__(self, sampler: common.ResumableSampler, batch_size: int, sizes: tuple[int, ...], seed: int,
                 first_batch: int = 0):
        self.sampler, self.batch_size, self.sizes, self.seed = sampler, batch_size, sizes, seed
        self.first_batch = first_batch

    def __iter__(self):
        stream = iter(self.sampler)
        batch_number = self.first_batch
        while True:
            generator = torch.Generator().manual_seed(self.seed * 7_919 + batch_number)
            short = self.sizes[int(torch.randint(len(self.sizes), (1,), generator=generator))]
            yield [(index, epoch, short) for index, epoch in (next(stream) for _ in range(self.batch_size))]
            batch_number += 1


# ---------------------------------------------------------------- training
def load_run_config(path: str) -> tuple[InstanceModelConfig, TrainConfig]:
    data = read_yaml(path)
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise ConfigError(f"config file '{path}': unknown section '{unknown[0]}'; use 'model' and 'train'.")
    model = from_dict(InstanceModelConfig, data.get("model", {}), where=f"{path}:model")
    train = from_dict(TrainConfig, data.get("train", {}), where=f"{path}:train")
    if train.crop is not None and (len(train.crop) != 2 or min(train.crop) <= 0):
        raise ConfigError(f"config file '{path}': train.crop must be [height, width] in pixels or null, "
                          f"not {list(train.crop)}.")
    return model, train


def train(model_cfg: InstanceModelConfig, cfg: TrainConfig, dataset, class_names: list[str], out_dir: Path,
          resume: bool = False, device: str | None = None, progress: bool = True,
          meta: dict[str, Any] | None = None, init: str | None = None) -> dict[str, Any]:
    """Train and return {"model", "iteration", "skipped_steps"}; checkpoints go to out_dir/last.pt."""
    dist = common.init_distributed(prefer_cuda=device != "cpu")
    torch_device = torch.device(device) if device and device != "cuda" else dist.device
    common.seed_everything(cfg.seed + dist.rank)
    model_cfg = dataclasses.replace(model_cfg, num_classes=len(class_names))
    model = build_instance_model(model_cfg)
    if init and not resume:  # start from trained weights (fine-tuning), with a fresh optimizer and schedule
        load_state_into(model, load_checkpoint(init, task="instance"), init)
    model = model.to(torch_device)
    ddp_model = common.wrap_ddp(model, dist)
    optimizer = torch.optim.AdamW(common.param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = common.warmup_step_scheduler(optimizer, cfg.warmup_iters, cfg.milestones, cfg.gamma,
                                             cfg.warmup_factor)
    use_amp = common.amp_enabled(torch_device, cfg.amp)
    scaler = common.make_grad_scaler(torch_device, use_amp)
    guard = common.GradientGuard(cfg.grad_clip)
    sampler = common.ResumableSampler(len(dataset), cfg.seed, True, dist.rank, dist.world_size)
    criterion = SparseInstLoss(len(class_names))
    checkpoint_path = out_dir / "last.pt"
    start = 0
    if resume:
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"--resume: '{checkpoint_path}' does not exist; start without --resume "
                                    "or point --out at the run to continue.")
        payload = common.load_training_checkpoint(checkpoint_path, task="instance", model=model, optimizer=optimizer,
                                                  scheduler=scheduler, scaler=scaler, sampler=sampler, guard=guard)
        start = payload["train_state"]["iteration"]
    logger = common.MetricLogger(out_dir, resume_iteration=start if resume else None, enabled=dist.is_main)
    batches = MultiScaleBatches(sampler, cfg.batch_size, tuple(cfg.min_sizes), cfg.seed, first_batch=start)
    loader = torch.utils.data.DataLoader(TrainSamples(dataset, cfg), batch_sampler=batches, collate_fn=collate_batch,
                                         num_workers=cfg.workers, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    meta = dict(meta or {}, train_config=to_dict(cfg))
    bar = common.progress(cfg.max_iters, start, progress and dist.is_main, "train instance")
    ddp_model.train()
    batch_iter = iter(loader)
    tic = time.perf_counter()
    for iteration in range(start, cfg.max_iters):
        batch = next(batch_iter)
        images = batch["images"].to(torch_device, non_blocking=True)
        with common.autocast(torch_device, use_amp):
            outputs = ddp_model(images)
        targets = [{"masks": m, "classes": c} for m, c in zip(batch["masks"], batch["classes"])]
        losses = criterion(outputs, targets)
        scaler.scale(losses["loss"]).backward()
        grad_norm = guard.step(ddp_model, optimizer, scaler, losses["loss"])
        scheduler.step()
        done = iteration + 1
        if done % cfg.log_every == 0 or done == cfg.max_iters:
            row = {"iter": done, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                   "skipped_steps": guard.skipped, "short_side": int(images.shape[-2]),
                   "sec_per_iter": (time.perf_counter() - tic) / cfg.log_every}
            row.update({k: float(common.all_reduce_mean(v.detach())) for k, v in losses.items()})
            logger.log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            tic = time.perf_counter()
        if dist.is_main and (done % cfg.checkpoint_every == 0 or done == cfg.max_iters):
            common.save_training_checkpoint(
                checkpoint_path, task="instance", model=model, model_config=to_dict(model_cfg),
                class_names=class_names, optimizer=optimizer, scheduler=scheduler, scaler=scaler, iteration=done,
                sampler_state=sampler.state_after(done * cfg.batch_size), guard=guard, meta=meta)
        bar.update(1)
    bar.close()
    return {"model": model, "model_config": model_cfg, "iteration": cfg.max_iters, "skipped_steps": guard.skipped}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf train instance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML with model: and train: sections (see models/)")
    parser.add_argument("--data", required=True, help="data set root (COCO layout: images/<split>, annotations/)")
    parser.add_argument("--format", default="coco", choices=["coco", "cityscapes"])
    parser.add_argument("--split", default="train")
    parser.add_argument("--val-split", default="val", help="split evaluated at the end ('' = none)")
    parser.add_argument("--out", required=True, help="run directory (last.pt, metrics.jsonl/.csv, eval)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init", default=None, help="initialise the model from this checkpoint's weights "
                                                     "(fine-tuning; optimizer and schedule start fresh)")
    parser.add_argument("--iters", type=int, default=None, help="override train.max_iters")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 1 on a shared machine)")
    parser.add_argument("--export", default=None, help="also write an fp16 model checkpoint here (e.g. models/x.pt)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model_cfg, cfg = load_run_config(args.config)
        if args.iters is not None:
            cfg = dataclasses.replace(cfg, max_iters=args.iters)
        dataset, class_names = open_dataset(args.format, args.data, args.split)
        out = Path(args.out)
        meta = {"command": "ros-amf train instance " + " ".join(argv), "data": args.data, "split": args.split}
        result = train(model_cfg, cfg, dataset, class_names, out, args.resume, args.device,
                       not args.no_progress, meta, args.init)
    except (ConfigError, FileNotFoundError, ValueError, DatasetFileError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    summary: dict[str, Any] = {"iterations": result["iteration"], "skipped_steps": result["skipped_steps"]}
    if args.val_split and args.format == "coco":
        from ros_amf.evaluation.instance import evaluate_model
        data = Path(args.data)
        report = evaluate_model(result["model"], class_names, data / "annotations" / f"instances_{args.val_split}.json",
                                data / "images" / args.val_split, result["model_config"].input_size,
                                next(result["model"].parameters()).device)
        summary["val"] = {k: v for k, v in report.items() if k != "detections"}
        print("val " + " ".join(f"{k}={v:.3f}" for k, v in report["metrics"].items()))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.export:
        from ros_amf.contract.checkpoint import save_checkpoint, sha256_of
        path = save_checkpoint(args.export, task="instance", model_config=to_dict(result["model_config"]),
                               class_names=class_names,
                               state_dict=result["model"].state_dict(), half=True,
                               meta={"command": "ros-amf train instance " + " ".join(argv), **summary})
        Path(path).with_suffix(".sha256").write_text(f"{sha256_of(path)}  {Path(path).name}\n")
        print(f"exported {path} ({Path(path).stat().st_size / 2**20:.1f} MiB)")
    return 0
