"""SparseInst's published checkpoints (hustvl/SparseInst, detectron2 ``.pth``) -> this package's model.

A published file is ``{"model": state_dict, ...}`` in detectron2's names: ``backbone.*`` (detectron2's
ResNet for R-50 / R-101 [-DCN], timm's ResNet-D for R-50-vd [-DCN]), ``encoder.*`` (laterals and output
convs listed from res5 down, ``ppm``, ``fusion``) and ``decoder.*`` (``inst_convs`` / ``mask_convs`` as
Sequential(conv, ReLU, ...), so their convs sit at even indices). :func:`official_config` reads the
architecture from the names and shapes, :func:`convert_official_state` renames every tensor and accounts
for each: a missing, unexpected or misshaped one stops the import with one sentence naming the first few.
Their FrozenBN keeps no update counter, so ours (``num_batches_tracked``) is the only thing filled in.

What their configs fix and the names do not say: RGB input, pixel mean/std (123.675, 116.28, 103.53) /
(58.395, 57.12, 57.375) in 0..255 units (= ImageNet's on 0..1, what :class:`PixelNormalisation` holds),
the bottleneck stride in the 3x3 (``STRIDE_IN_1X1: False``), FrozenBN, DCNv1 (``DEFORM_MODULATED`` off)
and test size 640 with the long side at most 864 (their README; the configs' MAX_SIZE_TEST is 853).
"""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ros_amf.contract.checkpoint import FORMAT
from ros_amf.contract.input_size import InputSize
from ros_amf.contract.labels import COCO_THING_NAMES
from ros_amf.contract.pixels import PixelNormalisation
from ros_amf.modeling.backbones import resnet_weights
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model

OFFICIAL_PIXEL_MEAN_255 = (123.675, 116.28, 103.53)
OFFICIAL_PIXEL_STD_255 = (58.395, 57.12, 57.375)
OFFICIAL_INPUT_SIZE = InputSize(640, 864)
SOURCE_FORMAT = "hustvl/SparseInst detectron2 checkpoint"


class OfficialWeightsError(ValueError):
    """A SparseInst checkpoint this importer cannot take; the message says what and what to do."""


def official_state(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of a loaded file in SparseInst's layout, or None if it is not one."""
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        return None
    names = [k for k in state if isinstance(k, str)]
    if not any(k.startswith("decoder.inst_branch.") for k in names) or not any(k.startswith("backbone.") for k in names):
        return None
    return state


def pixels_from(state: dict[str, torch.Tensor]) -> PixelNormalisation:
    """Their pixel mean/std (0..255) as ours (0..1): from the file if it stores them, else their config's."""
    mean = state.get("pixel_mean", torch.tensor(OFFICIAL_PIXEL_MEAN_255))
    std = state.get("pixel_std", torch.tensor(OFFICIAL_PIXEL_STD_255))
    return PixelNormalisation(tuple(round(float(v) / 255.0, 9) for v in mean.flatten()),
                              tuple(round(float(v) / 255.0, 9) for v in std.flatten()))


def _count(names: list[str], pattern: str) -> int:
    return len({m.group(1) for m in (re.fullmatch(pattern, n) for n in names) if m})


def official_config(state: dict[str, torch.Tensor], input_size: InputSize = OFFICIAL_INPUT_SIZE) -> InstanceModelConfig:
    """The InstanceModelConfig of the architecture a SparseInst state dict holds."""
    names = list(state)
    if "backbone.stem.conv1.weight" in state:        # detectron2 build_resnet_backbone
        stage_key, first, deep = r"backbone\.res{}\.(\d+)\..*", 2, False
    elif "backbone.conv1.0.weight" in state:         # timm-style ResNet-vd (build_resnet_vd_backbone)
        stage_key, first, deep = r"backbone\.layer{}\.(\d+)\..*", 1, True
    else:
        other = next((n for n in names if n.startswith("backbone.")), "?")
        raise OfficialWeightsError(f"the checkpoint's backbone ('{other}', ...) is not one of SparseInst's ResNets; "
                                   "import-weights takes the R-50 / R-101 (-DCN) and R-50-vd (-DCN) checkpoints, "
                                   "not the CSPDarkNet or PVT ones.")
    blocks = tuple(_count(names, stage_key.format(first + i)) for i in range(4))
    depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}.get(blocks)
    if depth is None:
        raise OfficialWeightsError(f"the checkpoint's ResNet has {blocks} blocks per stage, which is neither "
                                   "ResNet-50 (3, 4, 6, 3) nor ResNet-101 (3, 4, 23, 3); import a published model.")
    offsets = {n: t for n, t in state.items() if n.endswith("conv2_offset.weight")}
    dcn_stages = sorted({int(re.search(r"(?:res|layer)(\d)\.", n).group(1)) + (1 if deep else 0) for n in offsets})
    offset_channels = {t.shape[0] for t in offsets.values()}
    if offset_channels - {18, 27}:
        raise OfficialWeightsError(f"the checkpoint's DCN offset convs have {sorted(offset_channels)} channels; "
                                   "only 3x3 DCN with one offset group (18, or 27 modulated) can be imported.")
    if "encoder.ppm.bottleneck.weight" not in state:
        raise OfficialWeightsError("the checkpoint's encoder has no PPM ('encoder.ppm.*'); only SparseInst's "
                                   "InstanceContextEncoder can be imported.")
    dec = "decoder.inst_branch."
    inst_convs = _count(names, rf"{re.escape(dec)}inst_convs\.(\d+)\.weight")
    mask_convs = _count(names, r"decoder\.mask_branch\.mask_convs\.(\d+)\.weight")
    inst_dim = state[f"{dec}inst_convs.0.weight"].shape[0]
    mask_dim = state["decoder.mask_branch.mask_convs.0.weight"].shape[0]
    if inst_convs != mask_convs or inst_dim != mask_dim:
        raise OfficialWeightsError(f"the checkpoint's instance branch ({inst_convs} convs of {inst_dim}) and mask "
                                   f"branch ({mask_convs} convs of {mask_dim}) differ; this model needs them equal.")
    iam = state[f"{dec}iam_conv.weight"]
    grouped = f"{dec}fc.weight" in state
    groups = inst_dim // iam.shape[1] if grouped else 1
    return InstanceModelConfig(
        num_classes=int(state[f"{dec}cls_score.weight"].shape[0]), backbone_depth=depth, backbone_width=64,
        deep_stem=deep, avg_down=deep, dcn_stages=tuple(dcn_stages), dcn_modulated=27 in offset_channels,
        stride_in_1x1=False, backbone_frozen_bn=True, pixel_normalisation=pixels_from(state),
        encoder_channels=int(state["encoder.fusion.weight"].shape[0]), context="ppm", lite_bifpn=False, fem=False,
        decoder_channels=int(inst_dim), decoder_convs=inst_convs, num_masks=int(iam.shape[0] // groups),
        groups=groups, expand_dim=int(state[f"{dec}fc.weight"].shape[0]) if grouped else 1024,
        kernel_dim=int(state[f"{dec}mask_kernel.weight"].shape[0]), instance_fc=grouped,
        iam_softmax=f"{dec}softmax_bias" in state, head_norm="none", input_size=input_size)


def our_name(model: nn.Module, key: str) -> str | None:
    """Our state-dict name of an official tensor name, None if it has no place in the model."""
    if key.startswith("backbone."):
        rest, encoder = key.removeprefix("backbone."), model.backbone
        name = (resnet_weights.timm_resnet_d_name(encoder, rest) or resnet_weights.deform_offset_name(encoder, rest)
                if encoder.stem[0].kernel_size == (3, 3) else resnet_weights.detectron2_name(encoder, rest))
        return f"backbone.{name}" if name else None
    match = re.fullmatch(r"encoder\.fpn_(laterals|outputs)\.(\d)\.(weight|bias)", key)
    if match:   # theirs run res5 -> res3, ours res3 -> res5
        kind, index, tensor = match.groups()
        where = "laterals" if kind == "laterals" else "fpn.out_convs"
        return f"encoder.{where}.{2 - int(index)}.{tensor}"
    match = re.fullmatch(r"encoder\.ppm\.(stages\.\d\.1|bottleneck)\.(weight|bias)", key)
    if match:
        return f"encoder.context.{match.group(1)}.{match.group(2)}"
    if re.fullmatch(r"encoder\.fusion\.(weight|bias)", key):
        return key
    match = re.fullmatch(r"decoder\.(inst_branch\.inst|mask_branch\.mask)_convs\.(\d+)\.(weight|bias)", key)
    if match:   # Sequential(conv, ReLU, conv, ...) -> our Sequential of conv_norm_relu blocks
        branch, index, tensor = match.groups()
        if int(index) % 2:
            return None
        return f"decoder.{branch.split('.')[0]}.convs.{int(index) // 2}.0.{tensor}"
    if re.fullmatch(r"decoder\.inst_branch\.(iam_conv|fc|cls_score|mask_kernel|objectness)\.(weight|bias)", key) \
            or key in ("decoder.inst_branch.softmax_bias", "decoder.mask_branch.projection.weight",
                       "decoder.mask_branch.projection.bias"):
        return key
    return None


# tensors of their file that configure rather than weigh: read by pixels_from
_CONFIG_TENSORS = ("pixel_mean", "pixel_std")


def convert_official(state: dict[str, torch.Tensor], model: nn.Module, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Their state dict in our names, every tensor accounted for; raises OfficialWeightsError otherwise."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, misshaped = [], []
    for key, value in state.items():
        if key in _CONFIG_TENSORS:
            continue
        name = our_name(model, key) if isinstance(value, torch.Tensor) else None
        if name is None or name not in own:
            unexpected.append(key)
        elif value.shape != own[name].shape:
            misshaped.append(f"{key} {tuple(value.shape)} for {tuple(own[name].shape)}")
        else:
            mapped[name] = value.to(own[name].dtype)
    # their FrozenBN has no update counter; it is the one tensor of ours with no counterpart
    missing = [n for n in own if n not in mapped and not n.endswith("num_batches_tracked")]
    if missing or unexpected or misshaped:
        found = [f"{label} {items[:3]}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if items]
        raise OfficialWeightsError(f"SparseInst checkpoint '{source}' does not fit the architecture read from it "
                                   f"({', '.join(found)}); it is not one of the published R-50/R-101(-vd)(-DCN) "
                                   "models, or it was modified.")
    return {**{n: own[n] for n in own if n not in mapped}, **mapped}


def official_payload(obj: Any, source: str = "checkpoint",
                     input_size: InputSize = OFFICIAL_INPUT_SIZE) -> dict[str, Any] | None:
    """A loaded SparseInst file as a ros_amf checkpoint payload (instance task, COCO names); None if the
    file is not in SparseInst's layout."""
    state = official_state(obj)
    if state is None:
        return None
    cfg = official_config(state, input_size)
    model = build_instance_model(cfg)
    converted = convert_official(state, model, source)
    names = list(COCO_THING_NAMES) if cfg.num_classes == len(COCO_THING_NAMES) else \
        [f"class_{i}" for i in range(cfg.num_classes)]
    return {"format": FORMAT, "task": "instance", "model_config": asdict(cfg), "class_names": names,
            "state_dict": converted, "train_state": None,
            "meta": {"imported_from": str(source), "source_format": SOURCE_FORMAT,
                     "official_tensors": len(state)}}
