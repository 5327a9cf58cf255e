"""Parameters set on a running node (``ros2 param set``, the parameter services).

Live parameters (``ParamSpec.live``: thresholds, class filter, max instances, overlay, rate cap, ...)
are checked and take effect on the next frame. The others shape what ``configure`` builds (models,
device, topics, QoS): while the node is configured they are refused with the reason; in the
'unconfigured' lifecycle state any of them may be set, and the next configure uses them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

_UNIT_INTERVAL = ("score_threshold", "mask_threshold", "overlay_alpha")
_NON_NEGATIVE = ("max_rate_hz", "min_output_hz")
_POSITIVE = ("max_instances", "max_image_pixels", "input_timeout_s")


def value_problem(name: str, value, class_names: Sequence[str] | None) -> str | None:
    """Why ``value`` cannot be used for live parameter ``name`` (one sentence), or None."""
    if name in _UNIT_INTERVAL and not 0.0 <= float(value) <= 1.0:
        return f"{name} = {value} is outside 0..1; use a value between 0 and 1."
    if name in _NON_NEGATIVE and float(value) < 0:
        return f"{name} = {value} is negative; use 0 (off) or a rate in Hz."
    if name in _POSITIVE and value <= 0:
        return f"{name} = {value} must be positive."
    if name == "class_filter" and class_names is not None:
        unknown = [n for n in value if n and n not in class_names]
        if unknown:
            return f"class_filter names {unknown}, which the instance model does not have; valid names: {list(class_names)}."
    return None


def static_refusal(name: str) -> str:
    return (f"parameter '{name}' cannot change while the node is configured (the models, topics and QoS were built "
            "with it); deactivate and clean up the node, set it, then configure again, or restart with the new value.")


QOS_BASES = ("input_qos", "output_qos")   # the base profiles rclpy's qos_overrides parameters start from


def qos_refusal(name: str) -> str:
    return (f"parameter '{name}' cannot change once the node has opened its topics: rclpy fixed each topic's QoS "
            "then, in read-only qos_overrides parameters; restart the node with the new value.")


def class_ids(names: Sequence[str], class_names: Sequence[str]) -> tuple[int, ...]:
    return tuple(class_names.index(n) for n in names if n)


def apply_to_engine(engine, params: dict, class_names: Sequence[str] | None) -> None:
    """Push the live per-frame settings into a running engine: the stage threads read them per frame."""
    settings = engine.config                     # the very object the stages read (FrameSettings)
    settings.score_threshold = float(params.get("score_threshold", settings.score_threshold))
    settings.mask_threshold = float(params.get("mask_threshold", settings.mask_threshold))
    settings.max_instances = int(params.get("max_instances", settings.max_instances))
    if class_names is not None:
        ids = class_ids(params.get("class_filter") or [], class_names)
        settings.class_filter = ids
        # the stages keep the filter as a device tensor, built once per change, not per frame
        engine.stages.class_filter = (torch.tensor(ids, dtype=torch.long, device=engine.stages.device)
                                      if ids else None)
