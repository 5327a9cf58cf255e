"""``ros-amf export onnx``: a model's inference forward as an ONNX graph, checked against torch.

    ros-amf export onnx --checkpoint models/amf_sparseinst_r18slim.pt --out out/export/instance.onnx
    ros-amf export onnx --checkpoint models/fpn_afma_r18slim.pt --size 720x1280 --out sem_720p.onnx
    ros-amf export onnx --checkpoint models/amf_sparseinst_r18slim.pt --checkpoint models/fpn_afma_r18slim.pt \\
        --out joint.onnx                      # joint: one backbone forward, both heads
    ros-amf export onnx --config models/amf_sparseinst_r50.yaml --out r50.onnx   # random weights (speed)

The graph takes one pre-processed image [1,3,H,W] (float32, normalised, padded to a multiple of 32)
and returns plain tensors: pred_logits, pred_masks_stride8, pred_scores (instance) and/or logits
(semantic). The instance masks are at the mask branch's stride (1/8 of the input); upsample them x2
(bilinear, align_corners=False) to get the model's pred_masks at 1/4, as outputs_from_arrays does.
Pre- and post-processing stay outside (ros_amf.runtime.preprocess / outputs). The shape is fixed:
the padded network input a camera of ``--size`` HxW gets at the model's input size. The export is
then run in every installed backend (onnxruntime, openvino) on a synthetic street frame and compared
with torch; a drift beyond the tolerance fails the command. ``OUT.json`` says shapes, names and drift.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ros_amf.apps.common import add_input_size_flags, input_size_from
from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, sha256_of
from ros_amf.contract.config import ConfigError
from ros_amf.contract.input_size import plan_geometry
from ros_amf.runtime.backends import backend_version, make_runner
from ros_amf.runtime.backends_export import (INPUT_NAME, MAX_ABS_DIFF, OUTPUT_NAMES, export_onnx,
                                             largest_difference, sample_input, torch_reference, weights_digest)
from ros_amf.runtime.loading import (LoadedModel, joint_model, load_model, pixels_of, read_checkpoint,
                                     read_model_config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf export onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", default=[], type=Path,
                   help="model checkpoint (.pt); give an instance and a semantic one for the joint graph")
    p.add_argument("--config", action="append", default=[], type=Path,
                   help="model config (.yaml): with a checkpoint, the config it was trained with; alone, "
                        "random weights (export and speed checks only)")
    p.add_argument("--size", default="480x640", help="camera image HxW the graph is fixed for (default 480x640)")
    add_input_size_flags(p, "the model config's input_size")
    p.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the check (0 = torch default)")
    return p


def _task_of(checkpoint: Path | None, config: Path | None) -> str:
    if checkpoint is not None:
        try:
            return load_checkpoint(checkpoint)["task"]
        except CheckpointError:   # a published SparseInst .pth (hustvl), which run and eval take as they are
            return read_checkpoint(checkpoint, "instance")["task"]
    for task in ("instance", "semantic"):
        try:
            read_model_config(task, config)
            return task
        except ConfigError:
            continue
    raise ConfigError(f"config '{config}' is neither an instance nor a semantic model config; pass a models/*.yaml.")


def load_models(checkpoints: list[Path], configs: list[Path]) -> dict[str, LoadedModel]:
    """task -> model from the checkpoints and/or configs given (paired in order)."""
    count = max(len(checkpoints), len(configs))
    if count == 0 or count > 2 or (checkpoints and configs and len(checkpoints) != len(configs)):
        raise ValueError("give one model (--checkpoint and/or --config) or two for the joint graph (an instance "
                         "and a semantic one, each flag once per model).")
    models: dict[str, LoadedModel] = {}
    for i in range(count):
        checkpoint = checkpoints[i] if checkpoints else None
        config = configs[i] if configs else None
        task = _task_of(checkpoint, config)
        if task in models:
            raise ValueError(f"two {task} models given; the joint graph needs one instance and one semantic model.")
        models[task] = load_model(task, config, checkpoint)
    return models


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        camera_hw = tuple(int(v) for v in args.size.lower().split("x"))
        if len(camera_hw) != 2 or min(camera_hw) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --size '{args.size}' is not HxW (e.g. 480x640).", file=sys.stderr)
        return 2
    try:
        models = load_models(args.checkpoint, args.config)
        if len(models) == 2:
            module, notes = joint_model(models["instance"].module, models["semantic"].module)
            kind, size = "joint", input_size_from(args, models["instance"].input_size)
            for note in notes:
                print(f"note: {note}")
        else:
            (kind, model), = models.items()
            module, size = model.module, input_size_from(args, model.input_size)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    geometry = plan_geometry(*camera_hw, size)
    hw = geometry.padded_hw
    start = time.perf_counter()
    try:
        export_onnx(module, kind, hw, args.out)
    except Exception as exc:  # the exporter's own report is pages long: one line of it is enough here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: the {kind} graph could not be exported ({type(exc).__name__}: {first}); this model "
              "runs with backend torch only.", file=sys.stderr)
        return 1
    print(f"exported the {kind} graph ({', '.join(m.name for m in models.values())}) for camera "
          f"{camera_hw[0]}x{camera_hw[1]} at input {size.short_side}/{size.max_long_side}: {INPUT_NAME} "
          f"[1,3,{hw[0]},{hw[1]}] -> {', '.join(OUTPUT_NAMES[kind])} in {time.perf_counter() - start:.1f} s: {args.out}")
    sample = sample_input(camera_hw, size, pixels=pixels_of(module))
    reference = torch_reference(module, kind, sample)
    checks, failed = {}, False
    for backend in ("onnxruntime", "openvino"):
        try:
            backend_version(backend)
        except ImportError as exc:
            checks[backend] = {"skipped": str(exc)}
            print(f"check {backend:<12} skipped: {exc}")
            continue
        outputs = make_runner(backend, args.out, torch.get_num_threads())(sample)
        drift, where = largest_difference(reference, outputs, kind)
        ok = drift <= MAX_ABS_DIFF
        failed |= not ok
        checks[backend] = {"max_abs_diff_vs_torch": drift, "worst_output": where, "passed": ok}
        print(f"check {backend:<12} max |diff| vs torch {drift:.2e} (in {where}; tolerance {MAX_ABS_DIFF}): "
              f"{'reproduces torch' if ok else 'DOES NOT reproduce torch'}")
    meta = {"kind": kind, "models": {t: m.name for t, m in models.items()}, "camera_hw": list(camera_hw),
            "input_size": [size.short_side, size.max_long_side], "input": {INPUT_NAME: [1, 3, *hw]},
            "outputs": list(OUTPUT_NAMES[kind]), "weights_sha256": weights_digest(module),
            "onnx_sha256": sha256_of(args.out), "torch": torch.__version__, "checks": checks}
    Path(f"{args.out}.json").write_text(json.dumps(meta, indent=2))
    if failed:
        print(f"error: the exported graph does not reproduce torch; do not deploy {args.out}.", file=sys.stderr)
        return 1
    return 0
