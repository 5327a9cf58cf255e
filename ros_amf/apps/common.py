"""Command-line pieces every verb shares, so a flag is spelt the same way in every command."""
from __future__ import annotations

import argparse
from pathlib import Path

from ros_amf.contract.input_size import InputSize


def add_input_size_flags(parser: argparse.ArgumentParser, what: str = "the model config's input_size") -> None:
    """``--input-short-side`` / ``--input-max-long-side``; 0 or absent = ``what``.

    The old spellings (--short-side, --max-side, --max-long-side) stay as aliases for one release.
    """
    parser.add_argument("--input-short-side", "--short-side", dest="input_short_side", type=int, default=0,
                        help=f"network input short side in pixels (0 = {what})")
    parser.add_argument("--input-max-long-side", "--max-long-side", "--max-side", dest="input_max_long_side",
                        type=int, default=0, help=f"cap on the resized long side (0 = {what})")


def input_size_from(args: argparse.Namespace, config_size: InputSize) -> InputSize:
    """The input size the flags ask for, each side falling back to the model config's own."""
    short = args.input_short_side or config_size.short_side
    return InputSize(short, max(short, args.input_max_long_side or config_size.max_long_side))


def add_semantic_data_flags(parser: argparse.ArgumentParser) -> None:
    """Where semantic labels come from: ``--data`` (Cityscapes / CamVid layout) or the own-data folders."""
    parser.add_argument("--data", type=Path, help="dataset root (make-data --out directory or real data)")
    parser.add_argument("--images", type=Path, help="image folder (instead of --data; with --labels and --classes)")
    parser.add_argument("--labels", type=Path, help="label-PNG folder, same names and sub-folders as --images")
    parser.add_argument("--classes", type=Path, help="class table YAML: a list of {id, name, colour, small}")


def open_semantic_data(args: argparse.Namespace):
    """The data set the flags of :func:`add_semantic_data_flags` (with ``--dataset`` / ``--split``) name;
    ValueError with one sentence when they name none or both."""
    from ros_amf.evaluation.semantic import open_semantic_dataset, open_semantic_folder   # torch: only when used

    folder = [args.images, args.labels, args.classes]
    given = [f is not None for f in folder]
    if not ((args.data is not None and not any(given)) or (args.data is None and all(given))):
        raise ValueError("pass either --data DIR (Cityscapes / CamVid) or --images DIR --labels DIR --classes FILE.")
    if args.data is not None:
        return open_semantic_dataset(args.dataset, args.data, args.split)
    return open_semantic_folder(*folder)
