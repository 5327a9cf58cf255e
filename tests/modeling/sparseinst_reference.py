"""An independent reading of hustvl/SparseInst for the import tests.

``official_state_dict`` writes a state dict with the names and shapes a published checkpoint holds
(detectron2's ResNet, or timm's ResNet-vd as SparseInst builds it, optional DCNv1 offsets; their
encoder and decoders), filled with random values. ``reference_forward`` runs those tensors through a
functional re-implementation of their code (sparseinst/{encoder,decoder,sparseinst}.py,
sparseinst/backbones/resnet.py, detectron2 ResNet, FrozenBN, DeformConv), reading the official names
directly: nothing of ros_amf's model is used, so a renaming or structural slip in the importer shows up
as different outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
PIXEL_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
PIXEL_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


# ----------------------------------------------------------------------------------- writing --
class _Writer:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def randn(self, *shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * std

    def conv(self, name: str, cout: int, cin: int, k: int, bias: bool = False, gain: float = 1.0) -> None:
        self.state[f"{name}.weight"] = self.randn(cout, cin, k, k, std=gain / (cin * k * k) ** 0.5)
        if bias:
            self.state[f"{name}.bias"] = self.randn(cout, std=0.1)

    def linear(self, name: str, cout: int, cin: int, gain: float = 1.0) -> None:
        self.state[f"{name}.weight"] = self.randn(cout, cin, std=gain / cin ** 0.5)
        self.state[f"{name}.bias"] = self.randn(cout, std=0.1)

    def frozen_bn(self, name: str, channels: int, scale: float = 1.0) -> None:
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(channels, generator=self.g)  # noqa: E731
        self.state[f"{name}.weight"] = u(0.5, 1.0) * scale
        self.state[f"{name}.bias"] = self.randn(channels, std=0.1)
        self.state[f"{name}.running_mean"] = self.randn(channels, std=0.1)
        self.state[f"{name}.running_var"] = u(0.5, 2.0)


def official_state_dict(backbone: str = "r50", dcn_stages: tuple[int, ...] = (), decoder: str = "giam",
                        num_classes: int = 80, seed: int = 0) -> dict[str, torch.Tensor]:
    """backbone 'r50' (detectron2) or 'r50vd' (timm ResNet-D); dcn_stages among 2..5 (res names);
    decoder 'giam', 'base' (BaseIAMDecoder) or 'soft' (GroupIAMSoftDecoder)."""
    w = _Writer(seed)
    vd = backbone == "r50vd"
    if vd:
        w.conv("backbone.conv1.0", 32, 3, 3), w.frozen_bn("backbone.conv1.1", 32)
        w.conv("backbone.conv1.3", 32, 32, 3), w.frozen_bn("backbone.conv1.4", 32)
        w.conv("backbone.conv1.6", 64, 32, 3), w.frozen_bn("backbone.bn1", 64)
    else:
        w.conv("backbone.stem.conv1", 64, 3, 7), w.frozen_bn("backbone.stem.conv1.norm", 64)
    cin = 64
    for index, (blocks, planes) in enumerate(zip(BLOCKS[50], (64, 128, 256, 512))):
        stage = index + 2
        for b in range(blocks):
            p = f"backbone.layer{index + 1}.{b}" if vd else f"backbone.res{stage}.{b}"
            norm = (lambda i: f"{p}.bn{i}") if vd else (lambda i: f"{p}.conv{i}.norm")  # noqa: E731
            w.conv(f"{p}.conv1", planes, cin, 1), w.frozen_bn(norm(1), planes)
            if stage in dcn_stages:   # offsets of a few pixels: the bilinear sampling is exercised
                w.conv(f"{p}.conv2_offset", 18, planes, 3, bias=True, gain=3.0)
            w.conv(f"{p}.conv2", planes, planes, 3), w.frozen_bn(norm(2), planes)
            w.conv(f"{p}.conv3", planes * 4, planes, 1), w.frozen_bn(norm(3), planes * 4, scale=0.3)
            if b == 0:
                if vd:
                    w.conv(f"{p}.downsample.1", planes * 4, cin, 1), w.frozen_bn(f"{p}.downsample.2", planes * 4)
                else:
                    w.conv(f"{p}.shortcut", planes * 4, cin, 1), w.frozen_bn(f"{p}.shortcut.norm", planes * 4)
            cin = planes * 4
    for i, c in enumerate((2048, 1024, 512)):   # theirs: res5 first
        w.conv(f"encoder.fpn_laterals.{i}", 256, c, 1, bias=True)
        w.conv(f"encoder.fpn_outputs.{i}", 256, 256, 3, bias=True)
    for k in range(4):
        w.conv(f"encoder.ppm.stages.{k}.1", 64, 256, 1, bias=True)
    w.conv("encoder.ppm.bottleneck", 256, 256 + 4 * 64, 1, bias=True)
    w.conv("encoder.fusion", 256, 768, 1, bias=True)
    for branch, convs in (("inst_branch", "inst_convs"), ("mask_branch", "mask_convs")):
        for i in range(4):
            w.conv(f"decoder.{branch}.{convs}.{2 * i}", 256, 258 if i == 0 else 256, 3, bias=True, gain=1.4)
    groups = 1 if decoder == "base" else 4
    w.conv("decoder.inst_branch.iam_conv", 100 * groups, 256 // groups, 3, bias=True, gain=8.0)
    dim = 256 * groups
    if decoder != "base":
        w.linear("decoder.inst_branch.fc", dim, dim)
    if decoder == "soft":
        w.state["decoder.inst_branch.softmax_bias"] = torch.ones(1) + 0.2
    w.linear("decoder.inst_branch.cls_score", num_classes, dim)
    w.linear("decoder.inst_branch.mask_kernel", 128, dim)
    w.linear("decoder.inst_branch.objectness", 1, dim)
    w.conv("decoder.mask_branch.projection", 128, 256, 1, bias=True)
    return w.state


# ----------------------------------------------------------------------------------- running --
def frozen_bn(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """detectron2 FrozenBatchNorm2d: x * scale + shift with scale = w / sqrt(var + eps)."""
    scale = sd[f"{name}.weight"] * (sd[f"{name}.running_var"] + 1e-5).rsqrt()
    shift = sd[f"{name}.bias"] - sd[f"{name}.running_mean"] * scale
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def deform_conv_v1(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """detectron2 DeformConv (DCNv1, one group) by explicit gathering: tap k of output p reads x at
    p*stride - pad + (i, j) + (offset[2k], offset[2k+1]) bilinearly; corners outside the image read 0."""
    b, c, h, w = x.shape
    out_h, out_w = offset.shape[-2:]
    cols = []
    flat = x.reshape(b, c, h * w)
    for k in range(9):
        i, j = divmod(k, 3)
        py = torch.arange(out_h).view(-1, 1) * stride - padding + i + offset[:, 2 * k]
        px = torch.arange(out_w).view(1, -1) * stride - padding + j + offset[:, 2 * k + 1]
        y0, x0 = py.floor(), px.floor()
        value = torch.zeros(b, c, out_h, out_w)
        for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
            for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().view(b, 1, -1).expand(-1, c, -1)
                corner = flat.gather(2, index).view(b, c, out_h, out_w)
                value = value + corner * (wy * wx * inside).unsqueeze(1)
        cols.append(value)
    cols = torch.stack(cols, 2)   # [B, C, 9, Ho, Wo]
    return torch.einsum("bckhw,ock->bohw", cols, weight.reshape(weight.shape[0], c, 9))


def _bottleneck(sd: dict, p: str, x: torch.Tensor, stride: int, vd: bool) -> torch.Tensor:
    norm = (lambda i: f"{p}.bn{i}") if vd else (lambda i: f"{p}.conv{i}.norm")  # noqa: E731
    out = F.relu(frozen_bn(sd, norm(1), F.conv2d(x, sd[f"{p}.conv1.weight"])))
    if f"{p}.conv2_offset.weight" in sd:
        offset = F.conv2d(out, sd[f"{p}.conv2_offset.weight"], sd[f"{p}.conv2_offset.bias"], stride, 1)
        out = deform_conv_v1(out, offset, sd[f"{p}.conv2.weight"], stride, 1)
    else:
        out = F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)   # STRIDE_IN_1X1 False
    out = F.relu(frozen_bn(sd, norm(2), out))
    out = frozen_bn(sd, norm(3), F.conv2d(out, sd[f"{p}.conv3.weight"]))
    if vd and f"{p}.downsample.1.weight" in sd:   # timm downsample_avg: pool (identity at stride 1), conv, bn
        short = F.avg_pool2d(x, 2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else x
        short = frozen_bn(sd, f"{p}.downsample.2", F.conv2d(short, sd[f"{p}.downsample.1.weight"]))
    elif not vd and f"{p}.shortcut.weight" in sd:
        short = frozen_bn(sd, f"{p}.shortcut.norm", F.conv2d(x, sd[f"{p}.shortcut.weight"], stride=stride))
    else:
        short = x
    return F.relu(out + short)


def reference_backbone(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    vd = "backbone.conv1.0.weight" in sd
    if vd:
        x = F.relu(frozen_bn(sd, "backbone.conv1.1", F.conv2d(x, sd["backbone.conv1.0.weight"], stride=2, padding=1)))
        x = F.relu(frozen_bn(sd, "backbone.conv1.4", F.conv2d(x, sd["backbone.conv1.3.weight"], padding=1)))
        x = F.relu(frozen_bn(sd, "backbone.bn1", F.conv2d(x, sd["backbone.conv1.6.weight"], padding=1)))
    else:
        x = F.relu(frozen_bn(sd, "backbone.stem.conv1.norm", F.conv2d(x, sd["backbone.stem.conv1.weight"],
                                                                      stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for index, blocks in enumerate(BLOCKS[50]):
        for b in range(blocks):
            p = f"backbone.layer{index + 1}.{b}" if vd else f"backbone.res{index + 2}.{b}"
            x = _bottleneck(sd, p, x, 2 if (b == 0 and index > 0) else 1, vd)
        outs.append(x)
    return outs[1:]   # res3, res4, res5


def _conv(sd: dict, name: str, x: torch.Tensor, **kw) -> torch.Tensor:
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), **kw)


def reference_encoder(sd: dict, res3: torch.Tensor, res4: torch.Tensor, res5: torch.Tensor) -> torch.Tensor:
    """InstanceContextEncoder.forward: laterals listed from res5 down, PPM on the top lateral."""
    top = _conv(sd, "encoder.fpn_laterals.0", res5)
    h, w = top.shape[-2:]
    priors = [F.interpolate(F.relu(_conv(sd, f"encoder.ppm.stages.{k}.1", F.adaptive_avg_pool2d(top, size))),
                            size=(h, w), mode="bilinear", align_corners=False) for k, size in enumerate((1, 2, 3, 6))]
    prev = F.relu(_conv(sd, "encoder.ppm.bottleneck", torch.cat(priors + [top], 1)))
    outputs = [_conv(sd, "encoder.fpn_outputs.0", prev, padding=1)]
    for i, feature in ((1, res4), (2, res3)):
        prev = _conv(sd, f"encoder.fpn_laterals.{i}", feature) + F.interpolate(prev, scale_factor=2.0, mode="nearest")
        outputs.insert(0, _conv(sd, f"encoder.fpn_outputs.{i}", prev, padding=1))
    size = outputs[0].shape[2:]
    features = [outputs[0]] + [F.interpolate(x, size, mode="bilinear", align_corners=False) for x in outputs[1:]]
    return _conv(sd, "encoder.fusion", torch.cat(features, 1))


def reference_decoder(sd: dict, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """BaseIAMDecoder / GroupIAMDecoder / GroupIAMSoftDecoder.forward."""
    b, _, h, w = features.shape
    y_loc = -1.0 + 2.0 * torch.arange(h) / (h - 1)
    x_loc = -1.0 + 2.0 * torch.arange(w) / (w - 1)
    y_loc, x_loc = torch.meshgrid(y_loc, x_loc, indexing="ij")
    coords = torch.cat([x_loc.expand(b, 1, -1, -1), y_loc.expand(b, 1, -1, -1)], 1)
    features = torch.cat([coords, features], 1)
    inst = features
    for i in range(4):
        inst = F.relu(_conv(sd, f"decoder.inst_branch.inst_convs.{2 * i}", inst, padding=1))
    iam_w = sd["decoder.inst_branch.iam_conv.weight"]
    groups = inst.shape[1] // iam_w.shape[1]
    iam = _conv(sd, "decoder.inst_branch.iam_conv", inst, padding=1, groups=groups)
    n = iam.shape[1]
    if "decoder.inst_branch.softmax_bias" in sd:
        prob = F.softmax(iam.view(b, n, -1) + sd["decoder.inst_branch.softmax_bias"], dim=-1)
    else:
        prob = iam.sigmoid().view(b, n, -1)
        prob = prob / prob.sum(-1).clamp(min=1e-6)[:, :, None]
    inst_features = torch.bmm(prob, inst.view(b, inst.shape[1], -1).permute(0, 2, 1))
    if "decoder.inst_branch.fc.weight" in sd:
        inst_features = inst_features.reshape(b, 4, n // groups, -1).transpose(1, 2).reshape(b, n // groups, -1)
        inst_features = F.relu(F.linear(inst_features, sd["decoder.inst_branch.fc.weight"],
                                        sd["decoder.inst_branch.fc.bias"]))
    head = lambda name: F.linear(inst_features, sd[f"decoder.inst_branch.{name}.weight"],  # noqa: E731
                                 sd[f"decoder.inst_branch.{name}.bias"])
    mask = features
    for i in range(4):
        mask = F.relu(_conv(sd, f"decoder.mask_branch.mask_convs.{2 * i}", mask, padding=1))
    mask = _conv(sd, "decoder.mask_branch.projection", mask)
    kernel = head("mask_kernel")
    masks = torch.bmm(kernel, mask.view(b, mask.shape[1], -1)).view(b, -1, h, w)
    masks = F.interpolate(masks, scale_factor=2.0, mode="bilinear", align_corners=False)
    return {"pred_logits": head("cls_score"), "pred_masks": masks, "pred_scores": head("objectness")}


@torch.no_grad()
def reference_forward(sd: dict, images_0_255_rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """SparseInst.forward_test: normalise in 0..255 units, backbone, encoder, decoder."""
    x = (images_0_255_rgb - PIXEL_MEAN) / PIXEL_STD
    return reference_decoder(sd, reference_encoder(sd, *reference_backbone(sd, x)))
