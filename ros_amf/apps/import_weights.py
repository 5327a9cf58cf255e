"""``ros-amf import-weights sparseinst CHECKPOINT --out models/NAME``: a published SparseInst model as ours.

    ros-amf import-weights sparseinst sparse_inst_r50_giam_aug_2b7d68.pth --out models/sparseinst_r50_giam_coco

CHECKPOINT is a detectron2 ``.pth`` of hustvl/SparseInst (``{"model": state_dict, ...}``). Writes
NAME.pt (a ros_amf checkpoint: every tensor renamed and accounted for, COCO's 80 class names) and NAME.yaml
(the matching model config: architecture read from the file, their pixel mean/std and RGB order, input
640 / 864), then loads the pair once to prove it. The node also takes the ``.pth`` itself as
``instance.checkpoint``; importing saves the conversion at every start and gives a config to edit.
The file is read with ``torch.load(weights_only=True)``: nothing in it is run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ros_amf.apps.common import add_input_size_flags, input_size_from
from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_of
from ros_amf.contract.config import ConfigError
from ros_amf.modeling.sparseinst import official_weights
from ros_amf.runtime.loading import load_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-amf import-weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["sparseinst"], help="whose checkpoint: sparseinst (hustvl/SparseInst)")
    parser.add_argument("checkpoint", type=Path, help="the published .pth file")
    parser.add_argument("--out", required=True, type=Path, help="models/NAME: writes NAME.pt and NAME.yaml")
    add_input_size_flags(parser, f"{official_weights.OFFICIAL_INPUT_SIZE.short_side} / "
                                 f"{official_weights.OFFICIAL_INPUT_SIZE.max_long_side}, SparseInst's test size")
    return parser


def _plain(value):
    """YAML-safe copy: tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def import_sparseinst(checkpoint: Path, out: Path, input_size=official_weights.OFFICIAL_INPUT_SIZE) -> tuple[Path, Path]:
    """Convert, write NAME.pt + NAME.yaml, load the pair back; returns their paths."""
    found: dict = {}

    def adapt(loaded, path):
        if official_weights.official_state(loaded) is None:
            raise CheckpointError(f"'{path}' is not a SparseInst checkpoint (a dict whose 'model' holds backbone.*, "
                                  "encoder.* and decoder.* tensors); pass a .pth from hustvl/SparseInst.")
        try:
            found["payload"] = official_weights.official_payload(loaded, str(path), input_size)
        except official_weights.OfficialWeightsError as exc:
            raise CheckpointError(str(exc)) from None
        return found["payload"]

    payload = load_checkpoint(checkpoint, task="instance", adapt=adapt)
    if "payload" not in found:
        raise CheckpointError(f"'{checkpoint}' is already a ros_amf checkpoint; use it as it is.")
    meta = {**payload["meta"], "source_sha256": sha256_of(checkpoint)}
    pt, config = out.with_suffix(".pt"), out.with_suffix(".yaml")
    save_checkpoint(pt, task="instance", model_config=payload["model_config"], class_names=payload["class_names"],
                    state_dict=payload["state_dict"], meta=meta)
    header = (f"# SparseInst imported from {checkpoint.name} (hustvl/SparseInst, COCO {len(payload['class_names'])} "
              f"classes) by ros-amf import-weights.\n")
    config.write_text(header + yaml.safe_dump({"model": _plain(payload["model_config"])}, sort_keys=False))
    load_model("instance", config, pt)   # the pair loads as the node will load it
    return pt, config


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        size = input_size_from(args, official_weights.OFFICIAL_INPUT_SIZE)
        pt, config = import_sparseinst(args.checkpoint, args.out, size)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {pt} and {config}")
    return 0
