"""``ros-amf train semantic``: train a host network (FPN, DeepLabV3, U-Net, PSPNet) with or without AFMA.

    ros-amf train semantic --config models/fpn_afma_r18slim.yaml --data data/synth \\
        --dataset cityscapes --out runs/fpn_afma --recipe adam --iterations 2000

Loss: 5 · median-frequency weighted NLL + MSE(A, gold A) (AFMA paper Eq. 22-24); the class
weights are counted from the training labels at start-up and stored in the checkpoint.
Recipes: ``sgd`` (paper: momentum 0.9, weight decay 5e-4, lr 1e-3, /10 at --lr-steps epochs) and
``adam`` (authors' code: Adam, lr 1e-4). Augmentation: resize to --short-side, random scale
0.5-2.0, random crop --crop (padding with ignore), horizontal flip.
AMP on CUDA only; DDP with ``torchrun --nproc_per_node N -m ros_amf.apps.cli train semantic ...``.
A checkpoint is written atomically every --checkpoint-every iterations (``last.pt``);
``--resume`` continues from it with the same data order, optimiser and RNG state; ``--init CKPT``
instead starts from CKPT's weights with a fresh optimiser and schedule (fine-tuning, e.g. at a new scale).
``--max-minutes`` stops early (with a checkpoint) to fit a time budget.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, load_state_into, save_checkpoint, sha256_of
from ros_amf.contract.config import ConfigError, load, to_dict
from ros_amf.contract.labels import IGNORE_INDEX
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
from ros_amf.modeling.semantic.loss import SemanticLoss, class_pixel_histogram, median_frequency_weights
from ros_amf.evaluation.semantic import open_semantic_dataset
from ros_amf.contract.pixels import normalise
from ros_amf.training import common

TASK = "semantic"


def parse_hw(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size HxW such as 256x320") from None
    if height % 32 or width % 32:
        raise argparse.ArgumentTypeError(f"crop {text}: height and width must be multiples of 32 (the models' stride)")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf train semantic", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="model YAML (SemanticModelConfig keys), see models/")
    p.add_argument("--data", required=True, type=Path, help="dataset root (a make-data --out directory or the dataset folder)")
    p.add_argument("--dataset", choices=["cityscapes", "camvid"], default="cityscapes")
    p.add_argument("--out", required=True, type=Path, help="run directory: last.pt, final.pt, metrics.jsonl/csv")
    p.add_argument("--recipe", choices=["sgd", "adam"], default="adam", help="sgd = paper, adam = authors' code")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 for sgd, 1e-4 for adam)")
    p.add_argument("--lr-steps", type=float, nargs="*", default=[],
                   help="epochs after which the lr is divided by 10 (sgd recipe; also honoured by adam)")
    p.add_argument("--epochs", type=float, default=None, help="training length in epochs")
    p.add_argument("--iterations", type=int, default=None, help="training length in iterations (overrides --epochs)")
    p.add_argument("--max-minutes", type=float, default=0,
                   help="stop once the training wall time, summed over resumes, exceeds this (0 = no limit)")
    p.add_argument("--batch-size", type=int, default=8, help="images per iteration per process")
    p.add_argument("--short-side", type=int, default=240, help="images are first resized to this short side")
    p.add_argument("--crop", type=parse_hw, default=(256, 320), help="training crop HxW (multiples of 32)")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 2.0), help="random scale range")
    p.add_argument("--warmup-iters", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision (only used on CUDA anyway)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="also keep fp16 model snapshots OUT/snapshot_<iter>.pt every N iterations (0 = none), "
                        "e.g. to compare two runs at equal iterations")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's weights (fine-tuning) with a fresh optimiser and schedule")
    p.add_argument("--seed", type=int, default=0)
    return p


# ---------------------------------------------------------------- augmentation
def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, short_side: int,
            scale_range: tuple[float, float], crop: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to short_side x random scale, random crop (pad: black image, ignore label), random h-flip."""
    height, width = label.shape
    scale = short_side / min(height, width) * rng.uniform(*scale_range)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    crop_h, crop_w = crop
    pad_h, pad_w = max(0, crop_h - label.shape[0]), max(0, crop_w - label.shape[1])
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
    top = int(rng.integers(0, label.shape[0] - crop_h + 1))
    left = int(rng.integers(0, label.shape[1] - crop_w + 1))
    image, label = image[top:top + crop_h, left:left + crop_w], label[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


class AugmentedSemantic(torch.utils.data.Dataset):
    """Indexed by (index, epoch) from ResumableSampler, so augmentation is reproducible on resume."""

    def __init__(self, dataset, seed: int, short_side: int, scale_range, crop):
        self.dataset, self.seed = dataset, seed
        self.short_side, self.scale_range, self.crop = short_side, tuple(scale_range), crop

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        sample = self.dataset[index]
        rng = np.random.default_rng(common.sample_seed(self.seed, epoch, index))
        image, label = augment(sample["image"], sample["label"], rng, self.short_side, self.scale_range, self.crop)
        return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(label)


# ---------------------------------------------------------------- optimisation
def make_optimizer(model: torch.nn.Module, recipe: str, lr: float | None) -> torch.optim.Optimizer:
    if recipe == "sgd":  # paper: SGD, momentum 0.9, weight decay 5e-4, lr 1e-3
        return torch.optim.SGD(common.param_groups(model, 5e-4), lr=lr or 1e-3, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=lr or 1e-4)  # authors' code: Adam 1e-4


def class_weights_from(dataset) -> tuple[np.ndarray, dict]:
    pixels, image_pixels = class_pixel_histogram((dataset.load_label(i) for i in range(len(dataset))),
                                                 len(dataset.class_names))
    weights = median_frequency_weights(pixels, image_pixels)
    absent = [name for name, count in zip(dataset.class_names, pixels) if count == 0]
    return weights, {"class_pixels": pixels.tolist(), "absent_classes": absent}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load(SemanticModelConfig, args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = common.init_distributed()
    common.seed_everything(args.seed + dist.rank)
    train_set = open_semantic_dataset(args.dataset, args.data, "train")
    if len(train_set.class_names) != cfg.num_classes:
        print(f"error: {args.config} has num_classes {cfg.num_classes} but the {args.dataset} data has "
              f"{len(train_set.class_names)} classes; set num_classes: {len(train_set.class_names)}.", file=sys.stderr)
        return 2

    try:
        model = build_semantic_model(cfg).to(dist.device)
    except ValueError as exc:  # e.g. afma_depth beyond what the host's encoder keeps
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.init and not args.resume:
        try:
            load_state_into(model, load_checkpoint(args.init, task=TASK), args.init)
        except CheckpointError as exc:
            print(f"error: --init: {exc}", file=sys.stderr)
            return 2
    weights, histogram = class_weights_from(train_set)
    if histogram["absent_classes"] and dist.is_main:
        print(f"note: classes absent from the training labels (weight 0): {', '.join(histogram['absent_classes'])}")
    criterion = SemanticLoss(weights, cfg.num_classes).to(dist.device)
    optimizer = make_optimizer(model, args.recipe, args.lr)
    iters_per_epoch = max(1, math.ceil(len(train_set) / (args.batch_size * dist.world_size)))
    total = args.iterations or int(round((args.epochs or 50) * iters_per_epoch))
    milestones = [int(round(e * iters_per_epoch)) for e in args.lr_steps]
    scheduler = common.warmup_step_scheduler(optimizer, args.warmup_iters, milestones)
    use_amp = common.amp_enabled(dist.device, not args.no_amp)
    scaler = common.make_grad_scaler(dist.device, use_amp)
    sampler = common.ResumableSampler(len(train_set), args.seed, True, dist.rank, dist.world_size)
    guard = common.GradientGuard(max_norm=0.0)

    start_iteration, previous_seconds = 0, 0.0
    last = args.out / "last.pt"
    if args.resume:
        if not last.is_file():
            print(f"error: --resume given but {last} does not exist; start without --resume.", file=sys.stderr)
            return 2
        payload = common.load_training_checkpoint(last, task=TASK, model=model, optimizer=optimizer,
                                                  scheduler=scheduler, scaler=scaler, sampler=sampler, guard=guard)
        start_iteration = payload["train_state"]["iteration"]
        previous_seconds = float(payload["meta"].get("train_seconds", 0.0))  # the wall-time budget spans resumes
    model = common.wrap_ddp(model, dist)
    logger = common.MetricLogger(args.out, start_iteration if args.resume else None, enabled=dist.is_main)
    data = AugmentedSemantic(train_set, args.seed, args.short_side, args.scale_range, args.crop)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, drop_last=False,
                                         # own generator: starting the loader must not draw from the global
                                         # RNG, or a resumed run's dropout would differ from the original's
                                         generator=torch.Generator().manual_seed(args.seed))
    meta = {"command": "ros-amf train semantic " + " ".join(argv), "dataset": args.dataset,
            "class_weights": weights.tolist(), **histogram, "recipe": args.recipe}

    def export(path: Path, iteration: int) -> Path:
        # a shippable file: fp16 weights, no optimiser state
        return save_checkpoint(path, task=TASK, model_config=to_dict(cfg), class_names=list(train_set.class_names),
                               state_dict=common.unwrap(model).state_dict(), half=True,
                               meta={**meta, "iteration": iteration, "train_seconds": train_seconds})

    def save(path: Path, iteration: int, consumed: int) -> None:
        if dist.is_main:
            common.save_training_checkpoint(
                path, task=TASK, model=model, model_config=to_dict(cfg), class_names=list(train_set.class_names),
                optimizer=optimizer, scheduler=scheduler, scaler=scaler, iteration=iteration, guard=guard,
                meta={**meta, "iteration": iteration, "train_seconds": train_seconds},
                sampler_state=sampler.state_after(consumed))

    model.train()
    started = time.monotonic() - previous_seconds
    train_seconds = previous_seconds
    bar = common.progress(total, start_iteration, dist.is_main, desc="train semantic")
    iteration = start_iteration
    stream = iter(loader)
    while iteration < total:
        images, labels = next(stream)
        images = normalise(images.to(dist.device, non_blocking=True))
        labels = labels.to(dist.device, non_blocking=True)
        with common.autocast(dist.device, use_amp):
            outputs = model(images)
        losses = criterion(outputs, labels)  # in float32/64 outside autocast (the Gram sums need it)
        scaler.scale(losses["loss"]).backward()
        grad_norm = guard.step(model, optimizer, scaler, losses["loss"])
        scheduler.step()
        iteration += 1
        bar.update(1)
        train_seconds = time.monotonic() - started
        if iteration % args.log_every == 0 or iteration == total:
            row = {"iter": iteration, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                   "skipped": guard.skipped, "seconds": round(train_seconds, 1)}
            row.update({k: float(common.all_reduce_mean(v.detach())) for k, v in losses.items()})
            logger.log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        out_of_time = args.max_minutes and train_seconds > args.max_minutes * 60
        if iteration % args.checkpoint_every == 0 or iteration == total or out_of_time:
            save(last, iteration, iteration * args.batch_size)
        if args.snapshot_every and iteration % args.snapshot_every == 0 and dist.is_main:
            export(args.out / f"snapshot_{iteration:06d}.pt", iteration)
        if out_of_time:
            if dist.is_main:
                print(f"\nstopped at iteration {iteration}/{total}: --max-minutes {args.max_minutes} reached "
                      f"(checkpoint {last}; --resume continues).")
            break
    bar.close()
    save(args.out / "final.pt", iteration, iteration * args.batch_size)
    if dist.is_main:
        exported = export(args.out / "model.pt", iteration)
        print(f"trained to iteration {iteration} in {train_seconds / 60:.1f} min in all; "
              f"fp16 model {exported} (sha256 {sha256_of(exported)[:12]}); skipped steps (non-finite): {guard.skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
