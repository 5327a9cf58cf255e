"""Across Feature Map Attention (Sang et al., AFMA), computed without the attention matrix.

Per class k the paper builds A_k = I_k · F_kᵀ / p² (Eq. 6-7), where the rows of I_k
[L_full, p²] are the image-branch patches and the rows of F_k [L_down, p²] the feature-branch
patches (after the shared patch MLP). A_k has L_full x L_down entries — about 29 M per class
at 1024x2048 with p = 10, d = 2. Nothing downstream needs A_k itself:

* modulation (Eq. 14-15): (A_k / n_k) · Q_k = diag(1/n_k) · I_k · (F_kᵀ Q_k) / p², and F_kᵀ Q_k
  is only p² x p²;
* the nonzero count per row n_k (Eq. 15) does need each row of A_k, so it is computed a
  block of rows at a time and only the counts are kept;
* the gold-AFMA MSE (Eq. 23) expands into Gram matrices of size p² x p² (see
  ``ros_amf.modeling.semantic.loss``).

So this module returns the two factors (``AfmaFactors``) instead of A; ``AfmaFactors.attention``
materialises A only when someone asks (visualisation, tests).

Dilated encoders: features[d] has stride 2^d only up to the encoder's output stride (DeepLabV3 and
PSPNet: 8, so features[3..5] all have stride 8; PAN: 16). ``stride_depth`` s is log2 of the stride
features[d] really has; the attention grid, the pooled class maps (Eq. 9-11) and the gold AFMA use
2^s, while Eq. 2 still divides by 4^d. That is what the authors' code does: its encoder divides
features[d] by 4^d, and its DeepLabV3/PSPNet heads and loss clamp att_depth >= 4 to 3 for the pooling.
Elsewhere s = d.

Sizes: the paper's patching needs H and W to be multiples of p·2^s. Other sizes are handled by
zero-padding the *outputs* of both embedding branches (and the one-hot maps) at the bottom and
right up to the next multiple. A zero patch stays zero through the bias-free MLP, so padded
positions add nothing to A, to the nonzero counts or to the corrections, and the correction is
cropped back to H x W. For sizes that already are multiples this is exactly the paper's maths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Added to the nonzero count before dividing (as in the authors' code), so an all-zero row gives 0, not NaN.
COUNT_EPS = 1e-5


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[..., H, W] -> [..., L, p²]: non-overlapping p x p patches, row-major over the patch grid."""
    *lead, height, width = x.shape
    rows, cols = height // patch, width // patch
    x = x.reshape(*lead, rows, patch, cols, patch).transpose(-3, -2)
    return x.reshape(*lead, rows * cols, patch * patch)


def unpatchify(patches: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``patchify`` (the paper's fold, Eq. 16-17): [..., L, p²] -> [..., H, W]."""
    *lead, _, _ = patches.shape
    rows, cols = height // patch, width // patch
    x = patches.reshape(*lead, rows, cols, patch, patch).transpose(-3, -2)
    return x.reshape(*lead, height, width)


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad the last two dims at the bottom/right to height x width."""
    extra_h, extra_w = height - x.shape[-2], width - x.shape[-1]
    if extra_h == 0 and extra_w == 0:
        return x
    return F.pad(x, (0, extra_w, 0, extra_h))


def pooled_class_maps(labels: torch.Tensor, num_classes: int, stride_depth: int, height: int,
                      width: int) -> torch.Tensor:
    """One-hot of integer labels [B,H,W], zero-padded to height x width, average-pooled by 2^s (Eq. 9-10, 19).

    Built one class at a time so the full-resolution one-hot [B,C,H,W] is never held.
    Labels outside 0..C-1 (ignore) give an all-zero one-hot vector.
    """
    scale = 2 ** stride_depth
    dtype = torch.get_default_dtype()
    maps = []
    for k in range(num_classes):
        onehot_k = pad_to((labels == k).to(dtype), height, width)
        maps.append(F.avg_pool2d(onehot_k.unsqueeze(1), scale).squeeze(1) if scale > 1 else onehot_k)
    return torch.stack(maps, dim=1)


@dataclass
class AfmaFactors:
    """A = image_patches · feature_patchesᵀ / p², per batch item and class, kept factored.

    image_patches [B, C, L_full, p²], feature_patches [B, C, L_down, p²], on the padded grid
    padded_hw (a multiple of p·2^s); the feature grid is the image grid pooled by 2^s.
    """
    image_patches: torch.Tensor
    feature_patches: torch.Tensor
    patch_size: int
    stride_depth: int
    padded_hw: tuple[int, int]

    def attention(self) -> torch.Tensor:
        """Materialise A [B, C, L_full, L_down] (Eq. 7). Large: for visualisation and tests only."""
        return self.image_patches @ self.feature_patches.transpose(-1, -2) / self.patch_size ** 2

    def row_nonzero_counts(self, max_elements: int = 1 << 22) -> torch.Tensor:
        """Number of nonzero entries in each row of A, [B, C, L_full], computed in row blocks.

        In fp32 whatever the model runs in: an fp16 product can round to zero and drop out of the count."""
        image, feature = self.image_patches.detach().float(), self.feature_patches.detach().float()
        batch, classes, rows, _ = image.shape
        feature_t = feature.transpose(-1, -2).contiguous()
        block = min(rows, max(1, max_elements // max(1, batch * classes * feature.shape[-2])))
        # one product and one mask buffer reused for every block (the last block is shifted back to
        # stay full size): a fresh allocation per block fragments the heap and inflates the RSS
        product = image.new_empty(batch, classes, block, feature.shape[-2])
        nonzero = torch.empty(product.shape, dtype=torch.bool, device=image.device)
        counts = torch.empty(batch, classes, rows, dtype=torch.long, device=image.device)
        for start in range(0, rows, block):
            start = min(start, rows - block)
            torch.matmul(image[:, :, start:start + block], feature_t, out=product)
            torch.ne(product, 0, out=nonzero)
            counts[:, :, start:start + block] = nonzero.sum(-1)
        return counts


class PatchMLP(nn.Module):
    """The resolution transform shared by all patches: p² -> 2p² -> p², no bias, ReLU (Eq. 3-5)."""

    def __init__(self, patch_size: int):
        super().__init__()
        area = patch_size * patch_size
        self.layers = nn.Sequential(nn.Linear(area, 2 * area, bias=False), nn.Linear(2 * area, area, bias=False),
                                    nn.ReLU())

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches)


class AcrossFeatureMapAttention(nn.Module):
    """AFMA plug-in: attention between image patches and features[d] patches, modulating the logits.

    ``forward(image, features, logits)`` returns (modulated logits, AfmaFactors).
    ``stride_depth`` (default: depth) is log2 of the stride features[d] has on a dilated encoder.
    ``embed_rows`` bounds the image-branch work: the full-resolution 64-channel embedding is
    computed a strip of rows at a time (exact, with a halo), so it is never held whole.
    """

    def __init__(self, feature_channels: int, num_classes: int, depth: int = 2, patch_size: int = 10,
                 image_channels: int = 3, embed_rows: int = 40, stride_depth: int | None = None):
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"AFMA depth must be 1..5 (features[d] of the encoder), got {depth}.")
        stride_depth = depth if stride_depth is None else stride_depth
        if not 1 <= stride_depth <= depth:
            raise ValueError(f"AFMA stride_depth must be 1..{depth} (features[{depth}] has stride at most "
                             f"2^{depth}), got {stride_depth}.")
        if patch_size < 1:
            raise ValueError(f"AFMA patch_size must be >= 1, got {patch_size}.")
        self.num_classes = num_classes
        self.depth = depth
        self.stride_depth = stride_depth
        self.patch_size = patch_size
        self.embed_rows = max(patch_size, embed_rows // patch_size * patch_size)
        # Eq. 1: image branch, 7x7 conv to 64 then 3x3 conv to one map per class
        self.image_conv1 = nn.Conv2d(image_channels, 64, 7, padding=3)
        self.image_conv2 = nn.Conv2d(64, num_classes, 3, padding=1)
        # Eq. 2: feature branch, 1x1 conv from features[d] to one map per class (divided by 4^d in forward)
        self.feature_conv = nn.Conv2d(feature_channels, num_classes, 1)
        self.patch_mlp = PatchMLP(patch_size)

    @property
    def block(self) -> int:
        """H and W of the attention grid are padded to a multiple of this (p·2^s)."""
        return self.patch_size * 2 ** self.stride_depth

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        return math.ceil(height / self.block) * self.block, math.ceil(width / self.block) * self.block

    # ---------------------------------------------------------------- attention (Eq. 1-7)
    def _image_patches(self, image: torch.Tensor, padded_h: int, padded_w: int) -> torch.Tensor:
        """Eq. 1 + 3: embed the image a strip of rows at a time, patchify, MLP -> [B, C, L_full, p²]."""
        height, width = image.shape[-2:]
        halo = 4  # rows of context the 7x7 (3) and 3x3 (1) convolutions need
        padded_input = F.pad(image, (0, 0, halo, halo))
        p = self.patch_size
        columns = padded_w // p
        # filled strip by strip (strips are whole patch rows, so each is one contiguous range of L);
        # one preallocated tensor instead of a list + cat: no copy and no heap fragmentation
        patches = image.new_empty(image.shape[0], self.num_classes, padded_h // p * columns, p * p)
        for top in range(0, padded_h, self.embed_rows):
            bottom = min(top + self.embed_rows, padded_h)
            valid_bottom = min(bottom, height)
            if top < height:
                # conv1 gives rows top-1 .. valid_bottom+1; rows outside the image must be zero
                # for conv2 (its own zero padding), so they are masked rather than convolved
                hidden = F.conv2d(padded_input[..., top:valid_bottom + 2 * halo, :], self.image_conv1.weight,
                                  self.image_conv1.bias, padding=(0, 3))
                inside = torch.arange(top - 1, valid_bottom + 1, device=image.device)
                hidden = hidden * ((inside >= 0) & (inside < height)).to(hidden.dtype).view(-1, 1)
                embedded = F.conv2d(hidden, self.image_conv2.weight, self.image_conv2.bias, padding=(0, 1))
            else:
                embedded = image.new_zeros(image.shape[0], self.num_classes, 0, width)
            embedded = pad_to(embedded, bottom - top, padded_w)
            patches[:, :, top // p * columns:bottom // p * columns] = self.patch_mlp(patchify(embedded, p))
        return patches

    def attention_factors(self, image: torch.Tensor, feature: torch.Tensor) -> AfmaFactors:
        height, width = image.shape[-2:]
        scale = 2 ** self.stride_depth
        if feature.shape[-2:] != (height // scale, width // scale) or height % scale or width % scale:
            raise ValueError(f"AFMA depth {self.depth} needs features[{self.depth}] (stride {scale}) of size "
                             f"{height // scale}x{width // scale} for a {height}x{width} image, got "
                             f"{tuple(feature.shape[-2:])}; pad the image to a multiple of 32.")
        padded_h, padded_w = self.padded_size(height, width)
        image_patches = self._image_patches(image, padded_h, padded_w)
        feature_maps = self.feature_conv(feature) / 4 ** self.depth  # Eq. 2: 4^d, not 4^s (authors' code)
        feature_maps = pad_to(feature_maps, padded_h // scale, padded_w // scale)
        feature_patches = self.patch_mlp(patchify(feature_maps, self.patch_size))  # Eq. 4-5
        return AfmaFactors(image_patches, feature_patches, self.patch_size, self.stride_depth, (padded_h, padded_w))

    # ---------------------------------------------------------------- modulation (Eq. 8-18)
    def modulate(self, logits: torch.Tensor, factors: AfmaFactors) -> torch.Tensor:
        """x + correction · x, correction_k = fold(diag(1/n_k) · I_k · (F_kᵀ · Q_k) / p²)."""
        height, width = logits.shape[-2:]
        padded_h, padded_w = factors.padded_hw
        p = self.patch_size
        with torch.no_grad():  # argmax and counts carry no gradient (as in the paper)
            winners = logits.argmax(dim=1)
            pooled = pooled_class_maps(winners, self.num_classes, self.stride_depth, padded_h, padded_w)  # Eq. 9-11
            pooled_patches = patchify(pooled, p).to(factors.feature_patches.dtype)  # Eq. 12-13
            counts = factors.row_nonzero_counts().to(factors.image_patches.dtype) + COUNT_EPS
        # Eq. 14-15 reassociated: F_kᵀ · Q_k is p² x p² for every (batch, class)
        small = factors.feature_patches.transpose(-1, -2) @ pooled_patches / p ** 2
        modulated = torch.empty_like(logits)
        for k in range(self.num_classes):  # one class at a time: only one correction map alive
            rows = factors.image_patches[:, k] @ small[:, k] / counts[:, k, :, None]
            correction = unpatchify(rows, p, padded_h, padded_w)[..., :height, :width]  # Eq. 16-17
            modulated[:, k] = logits[:, k] * correction + logits[:, k]  # Eq. 18
        return modulated

    def forward(self, image: torch.Tensor, features: list[torch.Tensor],
                logits: torch.Tensor) -> tuple[torch.Tensor, AfmaFactors]:
        factors = self.attention_factors(image, features[self.depth])
        return self.modulate(logits, factors), factors
