"""Small building blocks shared by the SparseInst heads and the semantic decoders."""
from __future__ import annotations

from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """'none' (official SparseInst heads have no normalisation), 'gn' (GroupNorm, 32 groups or fewer) or 'bn'."""
    if kind == "none":
        return nn.Identity()
    if kind == "gn":
        groups = 32
        while channels % groups:
            groups //= 2
        return nn.GroupNorm(groups, channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm '{kind}' is unknown; use 'none', 'gn' or 'bn'.")


def conv_norm_relu(cin: int, cout: int, kernel: int = 3, norm: str = "none", dilation: int = 1,
                   groups: int = 1) -> nn.Sequential:
    """Conv -> norm -> ReLU with 'same' padding; the conv has a bias only when no norm follows it."""
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, groups=groups,
                                   bias=norm == "none"),
                         norm_layer(norm, cout), nn.ReLU(inplace=True))


def msra_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) weights and zero biases for every conv (detectron2's c2_msra_fill)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
