"""Foreign ResNet tensor names -> ResNetEncoder state-dict names.

Each ``*_name(encoder, key)`` returns our name for a tensor of the foreign file, ``None`` for a
name it does not know; ``*_unused(key)`` says which foreign tensors are deliberately not loaded
(the ImageNet classifier, caffe's solver state). The layouts:

* torchvision: ``conv1``/``bn1`` stem, ``layer1..4.<block>.conv1..3/bn1..3``, projection shortcut
  ``downsample.0`` (conv) and ``.1`` (BatchNorm), classifier ``fc``;
* timm ResNet-D (``resnet50d``): deep stem ``conv1.0/.1/.3/.4/.6`` + ``bn1`` and shortcut
  ``downsample.0`` = average pool (no weights), ``.1`` conv, ``.2`` BatchNorm; else as torchvision;
* MSRA caffe (detectron2 ``R-50.pkl``, names as in detectron2's ``convert_basic_c2_names``):
  ``conv1_w``, ``res_conv1_bn_{s,b}``, ``res<stage>_<block>_branch2{a,b,c}_{w,bn_s,bn_b}``,
  shortcut ``branch1``, classifier ``fc1000``; BatchNorm is a folded scale/shift (``_s``, ``_b``)
  and, in some files, statistics ``_rm``/``_riv``;
* detectron2's ``build_resnet_backbone`` (SparseInst's R-50 / R-101 checkpoints): ``stem.conv1`` with its
  BatchNorm as ``stem.conv1.norm``, ``res<stage>.<block>.conv1..3`` each with ``.norm``, projection shortcut
  ``shortcut`` (+ ``shortcut.norm``), DCN offsets ``conv2_offset``. SparseInst's ResNet-vd is timm's layout
  (above) with the same ``conv2_offset``; :func:`deform_offset_name` maps those for both.
"""
from __future__ import annotations

import re

from torch import nn

_CAFFE_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}


def _shortcut_name(encoder: nn.Module, stage: int, block: int, role: type[nn.Module], tensor: str) -> str:
    """Our shortcut's conv or BatchNorm sits at index 0/1 (plain) or 1/2 (after ResNet-D's pool); a block
    the encoder lacks gets the plain index, which the loader reports as unexpected or left out."""
    try:
        children = list(encoder.get_submodule(f"res{stage}.{block}.shortcut").children())
    except AttributeError:
        children = []
    index = next((i for i, child in enumerate(children) if isinstance(child, role)), int(role is nn.BatchNorm2d))
    return f"res{stage}.{block}.shortcut.{index}.{tensor}"


def _layers_name(encoder: nn.Module, key: str, conv_index: int) -> str | None:
    """``layer<i>.<b>.…`` of torchvision and timm; ``conv_index`` = the shortcut conv's index in ``downsample``."""
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)([123])\.(\w+)", key)
    if match:
        layer, block, kind, index, tensor = match.groups()
        return f"res{int(layer) + 1}.{block}.{kind}{index}.{tensor}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.(\d)\.(\w+)", key)
    if match:
        layer, block, index, tensor = match.groups()
        if int(index) not in (conv_index, conv_index + 1):
            return None
        role = nn.Conv2d if int(index) == conv_index else nn.BatchNorm2d
        return _shortcut_name(encoder, int(layer) + 1, int(block), role, tensor)
    return None


def torchvision_name(encoder: nn.Module, key: str) -> str | None:
    if key == "conv1.weight":
        return "stem.0.weight"
    match = re.fullmatch(r"bn1\.(\w+)", key)
    if match:
        return f"stem.1.{match.group(1)}"
    return _layers_name(encoder, key, conv_index=0)


def torchvision_unused(key: str) -> bool:
    """The ImageNet classifier (timm names it the same)."""
    return key in ("fc.weight", "fc.bias")


# timm's deep stem: conv1 = Sequential(conv, bn, act, conv, bn, act, conv), then bn1; ours is one Sequential
# (conv, bn, relu) x 3, so the indices agree up to the last conv and bn1 is our index 7.
def timm_resnet_d_name(encoder: nn.Module, key: str) -> str | None:
    match = re.fullmatch(r"conv1\.([01346])\.(\w+)", key)
    if match:
        return f"stem.{match.group(1)}.{match.group(2)}"
    match = re.fullmatch(r"bn1\.(\w+)", key)
    if match:
        return f"stem.7.{match.group(1)}"
    return _layers_name(encoder, key, conv_index=1)


def msra_name(encoder: nn.Module, key: str) -> str | None:
    if key == "conv1_w":
        return "stem.0.weight"
    match = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", key)
    if match:
        return f"stem.1.{_CAFFE_BN[match.group(1)]}"
    match = re.fullmatch(r"res(\d)_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)", key)
    if not match:
        return None
    stage, block, branch, tensor = match.groups()
    tensor = "weight" if tensor == "w" else _CAFFE_BN[tensor.removeprefix("bn_")]
    if branch == "1":
        role = nn.Conv2d if key.endswith("_w") else nn.BatchNorm2d
        return _shortcut_name(encoder, int(stage), int(block), role, tensor)
    index = "abc".index(branch[1]) + 1
    kind = "conv" if key.endswith("_w") else "bn"
    return f"res{stage}.{block}.{kind}{index}.{tensor}"


def msra_unused(key: str) -> bool:
    return key in ("fc1000_w", "fc1000_b") or key.endswith("_momentum")


def describe_file(names: list[str]) -> str:
    """'ResNet-101' from our names of a file's tensors, for messages; '' if the block counts fit no depth."""
    blocks = [len({n.split(".")[1] for n in names if n.startswith(f"res{stage}.")}) for stage in (2, 3, 4, 5)]
    bottleneck = any(".conv3." in n for n in names)
    layers = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50 if bottleneck else 34, (3, 4, 23, 3): 101}
    depth = layers.get(tuple(blocks))
    return f"ResNet-{depth}" if depth else ""


def describe_encoder(encoder: nn.Module) -> str:
    stem = "deep stem" if len(encoder.stem) > 3 else "7x7 stem"
    return f"ResNet-{encoder.depth} ({stem})"


def detectron2_name(encoder: nn.Module, key: str) -> str | None:
    """detectron2 ResNet names (without the model's ``backbone.`` prefix) -> ours."""
    match = re.fullmatch(r"stem\.conv1\.(weight|norm\.\w+)", key)
    if match:
        tensor = match.group(1)
        return "stem.0.weight" if tensor == "weight" else f"stem.1.{tensor.removeprefix('norm.')}"
    match = re.fullmatch(r"res(\d)\.(\d+)\.conv([123])\.(weight|norm\.\w+)", key)
    if match:
        stage, block, index, tensor = match.groups()
        if tensor == "weight":
            return f"res{stage}.{block}.conv{index}.weight"
        return f"res{stage}.{block}.bn{index}.{tensor.removeprefix('norm.')}"
    match = re.fullmatch(r"res(\d)\.(\d+)\.shortcut\.(weight|norm\.\w+)", key)
    if match:
        stage, block, tensor = match.groups()
        role = nn.Conv2d if tensor == "weight" else nn.BatchNorm2d
        return _shortcut_name(encoder, int(stage), int(block), role, tensor.removeprefix("norm."))
    return deform_offset_name(encoder, key)


def deform_offset_name(encoder: nn.Module, key: str) -> str | None:
    """``res<s>.<b>.conv2_offset.*`` (detectron2) or ``layer<i>.<b>.conv2_offset.*`` (timm-style) -> the offset
    conv inside our deformable conv2: ``offset`` (DCNv1) or ``offset_mask`` (DCNv2, 27 channels)."""
    match = re.fullmatch(r"(res|layer)(\d)\.(\d+)\.conv2_offset\.(weight|bias)", key)
    if not match:
        return None
    prefix, stage, block, tensor = match.groups()
    stage = int(stage) + (1 if prefix == "layer" else 0)
    try:
        conv2 = encoder.get_submodule(f"res{stage}.{block}.conv2")
    except AttributeError:
        conv2 = None
    inner = "offset_mask" if hasattr(conv2, "offset_mask") else "offset"
    return f"res{stage}.{block}.conv2.{inner}.{tensor}"
