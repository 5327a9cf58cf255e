"""Command-line pieces every verb shares, so a flag is spelt the same way in every command."""
from __future__ import annotations

import argparse

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
