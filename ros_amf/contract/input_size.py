"""The network input geometry: one name, ``input_size``, everywhere.

A model config carries its own ``input_size`` (short side after resize, cap on the long side);
the same two numbers are the ROS parameters ``<model>.input_size.short_side`` /
``<model>.input_size.max_long_side``, the CLI flags ``--input-short-side`` /
``--input-max-long-side`` and :class:`InputSize` here. Frames are resized keeping their aspect,
then padded bottom/right to a multiple of :data:`PAD_MULTIPLE` (the models' largest stride).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PAD_MULTIPLE = 32


def pad_to(value: int, multiple: int = PAD_MULTIPLE) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class InputSize:
    """Network input geometry: short side after resize, cap on the long side."""
    short_side: int = 384
    max_long_side: int = 512

    def __post_init__(self) -> None:
        if self.short_side < PAD_MULTIPLE or self.max_long_side < self.short_side:
            raise ValueError(f"input size short_side={self.short_side}, max_long_side={self.max_long_side} is "
                             f"invalid; use short_side >= {PAD_MULTIPLE} and max_long_side >= short_side.")


@dataclass(frozen=True)
class Geometry:
    """Where a frame went: original size, resized (valid) size, padded network size."""
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]


def plan_geometry(height: int, width: int, size: InputSize) -> Geometry:
    scale = size.short_side / min(height, width)
    if max(height, width) * scale > size.max_long_side:
        scale = size.max_long_side / max(height, width)
    rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
    return Geometry((height, width), (rh, rw), (pad_to(rh), pad_to(rw)))


def legacy_input_size_keys(data: dict) -> dict:
    """Map the old flat keys ``input_short_side`` / ``input_max_side`` to ``input_size`` (a copy)."""
    data = dict(data)
    short, long_ = data.pop("input_short_side", None), data.pop("input_max_side", None)
    if (short is not None or long_ is not None) and "input_size" not in data:
        default = InputSize()
        data["input_size"] = {"short_side": short or default.short_side, "max_long_side": long_ or default.max_long_side}
    return data
