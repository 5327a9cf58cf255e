"""Training-time augmentation of samples (dicts from the readers), deterministic under a seed.

:class:`TrainAugmentation` is the one pipeline both trainers use: scale jitter (a short side,
times a random factor, long side capped), a fixed-size random crop, horizontal flip and
photometric jitter. Its steps are callables ``t(sample, rng) -> sample`` that take their
randomness only from ``rng`` (a numpy Generator) and keep the image, the instance masks, boxes,
the ignore mask and the semantic label map consistent (labels are resized nearest). Geometric
steps drop instances that lose all their pixels (e.g. cropped away) and recompute boxes.
:class:`AugmentedDataset` seeds one generator per (seed, epoch, index), so a sample's
augmentation does not depend on data-loader worker count or order.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ros_amf.contract.labels import IGNORE_INDEX
from ros_amf.data.targets import boxes_from_masks


def _resize_masks(masks: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    if len(masks) == 0:
        return np.zeros((0, size_wh[1], size_wh[0]), dtype=bool)
    # cv2 resizes up to 512 channels at once; masks go through as HxWxN uint8
    out = np.empty((len(masks), size_wh[1], size_wh[0]), dtype=bool)
    for start in range(0, len(masks), 512):
        chunk = np.ascontiguousarray(masks[start:start + 512].transpose(1, 2, 0).astype(np.uint8))
        resized = cv2.resize(chunk, size_wh, interpolation=cv2.INTER_NEAREST_EXACT)
        out[start:start + 512] = (resized.reshape(size_wh[1], size_wh[0], -1).transpose(2, 0, 1) > 0)
    return out


def _drop_empty_instances(sample: dict, min_pixels: int = 1) -> dict:
    if "masks" not in sample:
        return sample
    keep = sample["masks"].reshape(len(sample["masks"]), -1).sum(axis=1) >= min_pixels
    sample["masks"] = sample["masks"][keep]
    sample["classes"] = sample["classes"][keep]
    sample["boxes"] = boxes_from_masks(sample["masks"])
    return sample


def resize_sample(sample: dict, size_wh: tuple[int, int]) -> dict:
    """Resize image (bilinear) and every label field (nearest) to ``size_wh``. Labels use
    INTER_NEAREST_EXACT: plain INTER_NEAREST samples half a pixel off the bilinear grid."""
    out = dict(sample)
    if (sample["image"].shape[1], sample["image"].shape[0]) == size_wh:
        return out
    out["image"] = cv2.resize(sample["image"], size_wh, interpolation=cv2.INTER_LINEAR)
    if "label" in sample:
        out["label"] = cv2.resize(sample["label"], size_wh, interpolation=cv2.INTER_NEAREST_EXACT)
    if "ignore_mask" in sample:
        out["ignore_mask"] = cv2.resize(sample["ignore_mask"].astype(np.uint8), size_wh,
                                        interpolation=cv2.INTER_NEAREST_EXACT) > 0
    if "masks" in sample:
        out["masks"] = _resize_masks(sample["masks"], size_wh)
        out = _drop_empty_instances(out)
    return out


def _nearest_exact_source(src: int, dst: int, start: int, count: int) -> np.ndarray:
    """Source indices of destination pixels start..start+count-1 under cv2's INTER_NEAREST_EXACT.
    Asked of cv2 itself (an index ramp, resized): its fixed-point rounding differs from
    floor((x + 0.5) * src / dst) on about one pixel in a few hundred."""
    ramp = np.arange(src, dtype=np.float32)[None, :].repeat(2, axis=0)
    mapped = cv2.resize(ramp, (dst, 2), interpolation=cv2.INTER_NEAREST_EXACT)[0]
    return mapped[start:start + count].astype(np.int64)


def resize_crop_sample(sample: dict, size_wh: tuple[int, int], y0: int, x0: int, height: int, width: int) -> dict:
    """``crop_sample(resize_sample(sample, size_wh), y0, x0, height, width)``, computing only the window.

    Training on crops resizes a few times more pixels than it keeps, most of them in the
    instance masks; this samples the source at the same points as cv2.resize instead
    (bilinear: source x = (x + 0.5) / scale - 0.5; nearest-exact: cv2's own index map), so the
    result matches the two-step version (masks exactly, the image within one grey level).
    """
    h, w = sample["image"].shape[:2]
    if (w, h) == tuple(size_wh):
        return crop_sample(sample, y0, x0, height, width)
    sx, sy = size_wh[0] / w, size_wh[1] / h
    out = dict(sample)
    to_source = np.array([[1 / sx, 0, (x0 + 0.5) / sx - 0.5], [0, 1 / sy, (y0 + 0.5) / sy - 0.5]])
    out["image"] = cv2.warpAffine(sample["image"], to_source, (width, height),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    rows = _nearest_exact_source(h, size_wh[1], y0, height)
    cols = _nearest_exact_source(w, size_wh[0], x0, width)
    for key in ("label", "ignore_mask"):
        if key in sample:
            out[key] = np.ascontiguousarray(sample[key][rows][:, cols])
    if "masks" in sample:
        out["masks"] = np.ascontiguousarray(sample["masks"][:, rows][:, :, cols])
        out = _drop_empty_instances(out)
    return out


class RandomCrop:
    """Crop a random window of ``size_hw`` (clipped to the image; the collate pads small images)."""

    def __init__(self, size_hw: tuple[int, int]):
        self.size_hw = size_hw

    def window(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(y0, x0, height, width) of a random window in an image of ``height`` x ``width``."""
        ch, cw = min(self.size_hw[0], height), min(self.size_hw[1], width)
        y0 = int(rng.integers(0, height - ch + 1))
        x0 = int(rng.integers(0, width - cw + 1))
        return y0, x0, ch, cw

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return crop_sample(sample, *self.window(*sample["image"].shape[:2], rng))


def crop_sample(sample: dict, y0: int, x0: int, height: int, width: int) -> dict:
    out = dict(sample)
    win = (slice(y0, y0 + height), slice(x0, x0 + width))
    out["image"] = np.ascontiguousarray(sample["image"][win])
    for key in ("label", "ignore_mask"):
        if key in sample:
            out[key] = np.ascontiguousarray(sample[key][win])
    if "masks" in sample:
        out["masks"] = np.ascontiguousarray(sample["masks"][:, win[0], win[1]])
        out = _drop_empty_instances(out)
    return out


class HorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
        for key in ("label", "ignore_mask"):
            if key in sample:
                out[key] = np.ascontiguousarray(sample[key][:, ::-1])
        if "masks" in sample:
            out["masks"] = np.ascontiguousarray(sample["masks"][:, :, ::-1])
            w = sample["image"].shape[1]
            boxes = sample["boxes"].copy()
            boxes[:, [0, 2]] = w - sample["boxes"][:, [2, 0]]
            out["boxes"] = boxes
        return out


class PhotometricJitter:
    """Random brightness, contrast, saturation and hue shift of the image only."""

    def __init__(self, brightness: float = 0.25, contrast: float = 0.25, saturation: float = 0.25,
                 hue_degrees: float = 8.0):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue_degrees

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        img = sample["image"].astype(np.float32)
        img *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        img = (img - gray[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray[..., None]
        img = np.clip(img, 0, 255).astype(np.uint8)
        if self.hue > 0:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            shift = int(round(rng.uniform(-self.hue, self.hue) / 2))  # OpenCV hue is 0..179 (degrees / 2)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out = dict(sample)
        out["image"] = img
        return out


class RandomShortSideResize:
    """Resize so the short side is one of ``short_sides`` (chosen at random) times a random factor
    from ``scale_range``; the long side is capped at ``max_long_side`` (None = no cap)."""

    def __init__(self, short_sides=tuple(range(416, 641, 32)), max_long_side: int | None = 1066,
                 scale_range: tuple[float, float] = (1.0, 1.0)):
        self.short_sides = tuple(short_sides)
        self.max_long_side = max_long_side
        self.scale_range = tuple(scale_range)

    def size_for(self, height: int, width: int, rng: np.random.Generator,
                 short_side: int | None = None) -> tuple[int, int]:
        """(width, height) after resizing; ``short_side`` overrides the random choice (a batch's size)."""
        if short_side is None:
            short_side = self.short_sides[int(rng.integers(len(self.short_sides)))]
        scale = short_side / min(height, width) * rng.uniform(*self.scale_range)
        if self.max_long_side:
            scale = min(scale, self.max_long_side / max(height, width))
        return max(1, int(round(width * scale))), max(1, int(round(height * scale)))

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return resize_sample(sample, self.size_for(*sample["image"].shape[:2], rng))


def pad_sample(sample: dict, height: int, width: int) -> dict:
    """Pad bottom/right to at least ``height`` x ``width``: ignored label and mask pixels, and image pixels that
    the batch fills with the mean colour (``valid_hw`` marks the real image), as inference pads."""
    h, w = sample["image"].shape[:2]
    pad_h, pad_w = max(0, height - h), max(0, width - w)
    if not (pad_h or pad_w):
        return sample
    out = dict(sample, valid_hw=sample.get("valid_hw", (h, w)))
    pad = ((0, pad_h), (0, pad_w))
    out["image"] = np.pad(sample["image"], pad + ((0, 0),))
    if "label" in sample:
        out["label"] = np.pad(sample["label"], pad, constant_values=IGNORE_INDEX)
    if "ignore_mask" in sample:
        out["ignore_mask"] = np.pad(sample["ignore_mask"], pad, constant_values=True)
    if "masks" in sample:
        out["masks"] = np.pad(sample["masks"], ((0, 0),) + pad)
    return out


@dataclass(frozen=True)
class TrainAugmentation:
    """The training pipeline: resize (scale jitter) -> crop -> flip -> photometric jitter (-> pad).

    With ``crop_hw`` only the crop window is resized (see :func:`resize_crop_sample`) and images
    smaller than the window are padded to it, so every sample comes out ``crop_hw``.
    """
    short_sides: tuple[int, ...] = tuple(range(416, 641, 32))
    max_long_side: int | None = 1066
    scale_range: tuple[float, float] = (1.0, 1.0)
    crop_hw: tuple[int, int] | None = None
    hflip: bool = True
    photometric: bool = False

    def __call__(self, sample: dict, rng: np.random.Generator, short_side: int | None = None) -> dict:
        resize = RandomShortSideResize(self.short_sides, self.max_long_side, self.scale_range)
        size_wh = resize.size_for(*sample["image"].shape[:2], rng, short_side)
        if self.crop_hw is None:
            sample = resize_sample(sample, size_wh)
        else:
            window = RandomCrop(self.crop_hw).window(size_wh[1], size_wh[0], rng)
            sample = resize_crop_sample(sample, size_wh, *window)
        sample = HorizontalFlip(0.5 if self.hflip else 0.0)(sample, rng)
        if self.photometric:
            sample = PhotometricJitter()(sample, rng)
        # padded last, bottom/right, with the mean colour (collate_batch): where and how inference pads
        return sample if self.crop_hw is None else pad_sample(sample, *self.crop_hw)


class AugmentedDataset:
    """Wraps a reader; indexed by ``(index, epoch)`` or ``(index, epoch, short_side)`` (the keys a
    training sampler yields). Sample ``index`` of ``epoch`` is augmented with the generator
    seeded by (seed, epoch, index); ``short_side`` fixes the resize of a whole batch."""

    def __init__(self, dataset, augmentation: TrainAugmentation, seed: int = 0):
        self.dataset, self.augmentation, self.seed = dataset, augmentation, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]) -> dict:
        index, epoch, *short_side = key
        rng = np.random.default_rng([self.seed, epoch, index])
        return self.augmentation(self.dataset[index], rng, *short_side)
