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

Launches vs memory: every op is one kernel launch on a GPU, where AFMA's kernels are small and the
host's Python launching them is the bottleneck; on a CPU memory is the scarce part. So the work is
split into blocks (image-branch row strips, row blocks of the nonzero count, class chunks of the
modulation) only when a temporary would exceed ``work_budget(device)`` elements: large on an
accelerator (one block at camera sizes, about 30 kernels in all), small on the CPU. The meta device
counts as an accelerator, so dispatch counts taken there (``ros_amf.modeling.dispatch_count``) are the GPU's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Added to the nonzero count before dividing (as in the authors' code), so an all-zero row gives 0, not NaN.
COUNT_EPS = 1e-5
# Elements one temporary may hold before the work is split into blocks (see the module docstring).
CPU_BLOCK_ELEMENTS = 1 << 22            # 16 MiB in fp32: larger blocks fall out of the cache and run slower
ACCELERATOR_BLOCK_ELEMENTS = 1 << 27    # 512 MiB in fp32: 736x1280 with 19 classes in one block


def work_budget(device: torch.device) -> int:
    return CPU_BLOCK_ELEMENTS if torch.device(device).type == "cpu" else ACCELERATOR_BLOCK_ELEMENTS


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


def one_hot_maps(labels: torch.Tensor, first: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
    """[B,H,W] integer labels -> [B, stop-first, H, W] one-hot of classes first..stop-1 (others, e.g. ignore, 0)."""
    classes = torch.arange(first, stop, device=labels.device).view(1, -1, 1, 1)
    return (labels.unsqueeze(1) == classes).to(dtype)


def pooled_class_maps(labels: torch.Tensor, num_classes: int, stride_depth: int, height: int,
                      width: int, budget: int | None = None) -> torch.Tensor:
    """One-hot of integer labels [B,H,W], average-pooled by 2^s and zero-padded to (height, width) / 2^s (Eq. 9-10, 19).

    Labels outside 0..C-1 (ignore) give an all-zero one-hot vector. The full-resolution one-hot is
    built for as many classes at once as ``budget`` elements allow (all of them on an accelerator).
    """
    scale = 2 ** stride_depth
    dtype = torch.get_default_dtype()
    budget = work_budget(labels.device) if budget is None else budget
    chunk = max(1, budget // max(1, labels.numel()))
    # pooling cells cut by the label map's border are completed with zeros (no class)
    cells_h, cells_w = -(-labels.shape[-2] // scale) * scale, -(-labels.shape[-1] // scale) * scale
    maps = []
    for first in range(0, num_classes, chunk):
        onehot = pad_to(one_hot_maps(labels, first, min(first + chunk, num_classes), dtype), cells_h, cells_w)
        maps.append(F.avg_pool2d(onehot, scale) if scale > 1 else onehot)
    pooled = maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)
    return pad_to(pooled, height // scale, width // scale)


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

    def row_nonzero_counts(self, max_elements: int | None = None) -> torch.Tensor:
        """Number of nonzero entries in each row of A, [B, C, L_full], in row blocks of at most
        ``max_elements`` product entries (default: ``work_budget`` of the device; one block on a GPU).

        In fp32 whatever the model runs in: an fp16 product can round to zero and drop out of the count."""
        with torch.no_grad():
            return self._row_nonzero_counts(max_elements)

    def _row_nonzero_counts(self, max_elements: int | None) -> torch.Tensor:
        image, feature = self.image_patches.float(), self.feature_patches.float()
        batch, classes, rows, _ = image.shape
        feature_t = feature.transpose(-1, -2)
        budget = work_budget(image.device) if max_elements is None else max_elements
        block = min(rows, max(1, budget // max(1, batch * classes * feature.shape[-2])))
        if block == rows:   # one product for all classes: a batched matmul and a reduction
            product = torch.bmm(image.reshape(batch * classes, rows, -1), feature_t.reshape(batch * classes, -1,
                                                                                             feature.shape[-2]))
            # ne + sum: torch.count_nonzero over a dim is several times slower on the CPU
            return product.ne(0).sum(-1).view(batch, classes, rows)
        # one product and one mask buffer reused for every block (the last block is shifted back to
        # stay full size): a fresh allocation per block fragments the heap and inflates the RSS
        feature_t = feature_t.contiguous()
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
        """[..., p²] patches -> [..., p²], the literal two layers (the reference path)."""
        return self.layers(patches)

    def patch_kernel(self) -> torch.Tensor:
        """The two bias-free layers have no nonlinearity between them, so they are one p² x p² matrix
        W2·W1, applied to every p x p patch: a convolution with stride p, kernel [p², 1, p, p]."""
        area = self.layers[0].in_features
        side = math.isqrt(area)
        return (self.layers[1].weight @ self.layers[0].weight).view(area, 1, side, side)

    def patches_of(self, maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] maps (H, W multiples of p) -> MLP'd patches [B, C, L, p²] (Eq. 3-5) in two
        kernels, without the patchify copy: a transposed view of the convolution's [B, C, p², L]."""
        batch, classes, height, width = maps.shape
        side = kernel.shape[-1]
        columns = torch.relu(F.conv2d(maps.reshape(batch * classes, 1, height, width), kernel, stride=side))
        return columns.view(batch, classes, side * side, -1).transpose(-1, -2)


class AcrossFeatureMapAttention(nn.Module):
    """AFMA plug-in: attention between image patches and features[d] patches, modulating the logits.

    ``forward(image, features, logits)`` returns (modulated logits, AfmaFactors).
    ``stride_depth`` (default: depth) is log2 of the stride features[d] has on a dilated encoder.
    ``embed_rows``: when the full-resolution 64-channel embedding would exceed the work budget, it
    is computed a strip of this many rows at a time (exact, with a halo), so it is never held whole.
    ``block_elements`` overrides ``work_budget(device)`` (tests use it to force the blocked paths).
    """

    def __init__(self, feature_channels: int, num_classes: int, depth: int = 2, patch_size: int = 10,
                 image_channels: int = 3, embed_rows: int = 40, stride_depth: int | None = None,
                 block_elements: int | None = None):
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
        self.block_elements = block_elements
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

    def budget(self, device: torch.device) -> int:
        return work_budget(device) if self.block_elements is None else self.block_elements

    # ---------------------------------------------------------------- attention (Eq. 1-7)
    def _image_patches(self, image: torch.Tensor, padded_h: int, padded_w: int,
                       kernel: torch.Tensor) -> torch.Tensor:
        """Eq. 1 + 3: embed the image (in strips of rows if it is too large), patchify, MLP -> [B, C, L_full, p²]."""
        height, width = image.shape[-2:]
        p = self.patch_size
        if image.shape[0] * self.image_conv1.out_channels * height * width <= self.budget(image.device):
            embedded = pad_to(self.image_conv2(self.image_conv1(image)), padded_h, padded_w)
            return self.patch_mlp.patches_of(embedded, kernel)
        halo = 4  # rows of context the 7x7 (3) and 3x3 (1) convolutions need
        padded_input = F.pad(image, (0, 0, halo, halo))
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
            patches[:, :, top // p * columns:bottom // p * columns] = self.patch_mlp.patches_of(embedded, kernel)
        return patches

    def attention_factors(self, image: torch.Tensor, feature: torch.Tensor) -> AfmaFactors:
        height, width = image.shape[-2:]
        scale = 2 ** self.stride_depth
        if feature.shape[-2:] != (height // scale, width // scale) or height % scale or width % scale:
            raise ValueError(f"AFMA depth {self.depth} needs features[{self.depth}] (stride {scale}) of size "
                             f"{height // scale}x{width // scale} for a {height}x{width} image, got "
                             f"{tuple(feature.shape[-2:])}; pad the image to a multiple of 32.")
        padded_h, padded_w = self.padded_size(height, width)
        kernel = self.patch_mlp.patch_kernel()
        image_patches = self._image_patches(image, padded_h, padded_w, kernel)
        feature_maps = self.feature_conv(feature) / 4 ** self.depth  # Eq. 2: 4^d, not 4^s (authors' code)
        feature_maps = pad_to(feature_maps, padded_h // scale, padded_w // scale)
        feature_patches = self.patch_mlp.patches_of(feature_maps, kernel)  # Eq. 4-5
        return AfmaFactors(image_patches, feature_patches, self.patch_size, self.stride_depth, (padded_h, padded_w))

    # ---------------------------------------------------------------- modulation (Eq. 8-18)
    def modulate(self, logits: torch.Tensor, factors: AfmaFactors) -> torch.Tensor:
        """x + correction · x, correction_k = fold(diag(1/n_k) · I_k · (F_kᵀ · Q_k) / p²)."""
        padded_h, padded_w = factors.padded_hw
        p = self.patch_size
        image_patches, feature_patches = factors.image_patches, factors.feature_patches
        batch, classes, rows, area = image_patches.shape
        budget = self.budget(logits.device)
        with torch.no_grad():  # argmax and counts carry no gradient (as in the paper)
            winners = logits.argmax(dim=1)
            pooled = pooled_class_maps(winners, self.num_classes, self.stride_depth, padded_h, padded_w,
                                       budget)  # Eq. 9-11
            pooled_patches = patchify(pooled, p).to(feature_patches.dtype)  # Eq. 12-13
            # a long + a float scalar is float32: the count is exact there, whatever the model's dtype
            counts = torch.add(factors.row_nonzero_counts(budget), COUNT_EPS).to(image_patches.dtype)
        # Eq. 14-15 reassociated: F_kᵀ · Q_k is p² x p² for every (batch, class)
        small = torch.bmm(feature_patches.reshape(batch * classes, -1, area).mT,
                          pooled_patches.reshape(batch * classes, -1, area)) / p ** 2
        small = small.view(batch, classes, area, area)
        # classes in chunks whose correction maps fit the budget: all at once on an accelerator
        chunk = max(1, budget // max(1, batch * rows * area))
        if chunk >= classes:
            return self._modulated(logits, image_patches, small, counts, (padded_h, padded_w))
        modulated = torch.empty_like(logits)
        for first in range(0, classes, chunk):
            part = slice(first, first + chunk)
            modulated[:, part] = self._modulated(logits[:, part], image_patches[:, part], small[:, part],
                                                 counts[:, part], (padded_h, padded_w))
        return modulated

    def _modulated(self, logits: torch.Tensor, image_patches: torch.Tensor, small: torch.Tensor,
                   counts: torch.Tensor, padded_hw: tuple[int, int]) -> torch.Tensor:
        """Eq. 14-18 for the classes given: the correction rows are built transposed, [p², L] per
        (batch, class), so that the fold (Eq. 16-17) is one pixel shuffle."""
        batch, classes, rows, area = image_patches.shape
        p = self.patch_size
        rows_t = torch.bmm(small.reshape(batch * classes, area, area).mT,
                           image_patches.reshape(batch * classes, rows, area).mT)
        rows_t = rows_t / counts.reshape(batch * classes, 1, rows)
        correction = F.pixel_shuffle(rows_t.view(batch, classes * area, padded_hw[0] // p, padded_hw[1] // p), p)
        correction = correction[..., :logits.shape[-2], :logits.shape[-1]]
        return torch.addcmul(logits, logits, correction)  # Eq. 18: x + x · correction

    def forward(self, image: torch.Tensor, features: list[torch.Tensor],
                logits: torch.Tensor) -> tuple[torch.Tensor, AfmaFactors]:
        factors = self.attention_factors(image, features[self.depth])
        return self.modulate(logits, factors), factors
