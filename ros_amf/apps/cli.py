"""The one command-line entry point: ``ros-amf <verb> [args]``.

Each verb lives in its own module exposing ``main(argv: list[str]) -> int`` (or names another
function of it, ``module:function``); modules are
imported only when their verb runs, so ``ros-amf make-data`` never imports torch or rclpy.
"""
from __future__ import annotations

import importlib
import sys

# verb (one or two words) -> "module" with main(argv), or "module:function" taking argv
COMMANDS: dict[str, tuple[str, str]] = {
    "make-data": ("ros_amf.apps.make_data", "write the synthetic street-scene dataset (COCO, Cityscapes, CamVid, bags)"),
    "model-info": ("ros_amf.apps.model_info", "parameters and GFLOPs per module of a model config"),
    "train instance": ("ros_amf.apps.train:main_instance", "train SparseInst / AMF-SparseInst"),
    "train semantic": ("ros_amf.apps.train:main_semantic", "train a semantic host network with or without AFMA"),
    "train joint": ("ros_amf.apps.train:main_joint", "train both heads on one shared backbone"),
    "eval instance": ("ros_amf.apps.eval_instance", "COCO mask AP of an instance checkpoint (pycocotools)"),
    "eval semantic": ("ros_amf.apps.eval_semantic", "mIoU / mIoU_S / mIoU_L of a semantic checkpoint"),
    "eval ceiling": ("ros_amf.apps.eval_ceiling", "the mask AP or mIoU a perfect model could reach at an input size"),
    "calibrate semantic": ("ros_amf.apps.calibrate", "choose and store a semantic checkpoint's class-prior correction"),
    "import-weights": ("ros_amf.apps.import_weights", "a published SparseInst .pth -> models/NAME.pt + NAME.yaml"),
    "run": ("ros_amf.apps.run", "start the perception node graph from a parameter file"),
    "demo": ("ros_amf.apps.demo", "the main job: bag -> perception node over rclpy -> report"),
    "replay": ("ros_amf.apps.replay", "replay a bag into the node graph, benchmark speed and accuracy"),
    "bench runtime": ("ros_amf.apps.bench", "bare model vs pipelined runtime vs naive node"),
    "bench soak": ("ros_amf.apps.soak", "memory flatness: 20,000 frames at 2x overload, RSS slope after warm-up"),
    "export onnx": ("ros_amf.apps.export", "a model's inference forward as ONNX, checked against torch"),
}


def _usage() -> str:
    width = max(len(v) for v in COMMANDS)
    lines = ["usage: ros-amf <command> [options]", "", "commands:"]
    lines += [f"  {verb:<{width}}  {text}" for verb, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'ros-amf <command> --help' for the options of one command."]
    return "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, list[str]] | None:
    """Find the longest verb (two words before one) at the start of argv."""
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    found = resolve(argv)
    if found is None:
        print(f"ros-amf: unknown command '{' '.join(argv[:2])}'; run 'ros-amf --help' for the list.",
              file=sys.stderr)
        return 2
    verb, rest = found
    module_name, _, function = COMMANDS[verb][0].partition(":")
    return int(getattr(importlib.import_module(module_name), function or "main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
