"""Image pre-processing shared by the runtime, training pipelines and evaluators.

RGB uint8 -> float 0..1 -> ImageNet mean/std, resized keeping aspect so the short side equals
the input short side (long side capped), padded bottom/right to a multiple of 32.
Two implementations of the same maths: ``preprocess_numpy`` (OpenCV, the fast CPU path) and
``preprocess_torch`` (any torch device; the GPU path does colour conversion, resize and
normalisation on the device).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics on 0..1 RGB; every pipeline that feeds the models normalises with these.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

PAD_MULTIPLE = 32

# encoding -> (channels in the message, channel indices that give R, G, B)
ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}


@dataclass(frozen=True)
class InputSize:
    """Network input geometry: short side after resize, cap on the long side."""
    short_side: int = 320
    max_long_side: int = 544

    def __post_init__(self) -> None:
        if self.short_side < PAD_MULTIPLE or self.max_long_side < self.short_side:
            raise ValueError(f"input size short_side={self.short_side}, max_long_side={self.max_long_side} is "
                             f"invalid; use short_side >= {PAD_MULTIPLE} and max_long_side >= short_side.")


@dataclass(frozen=True)
class Geometry:
    """Where a frame went: original size, resized (valid) size, padded network size."""
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]


def plan_geometry(height: int, width: int, size: InputSize) -> Geometry:
    scale = size.short_side / min(height, width)
    if max(height, width) * scale > size.max_long_side:
        scale = size.max_long_side / max(height, width)
    rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
    ph, pw = (math.ceil(v / PAD_MULTIPLE) * PAD_MULTIPLE for v in (rh, rw))
    return Geometry((height, width), (rh, rw), (ph, pw))


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """HxWxC (or HxW for mono8) array of ``encoding`` -> HxWx3 RGB uint8 (a view where possible)."""
    channels, order = ENCODINGS[encoding]
    if channels == 1:
        plane = image if image.ndim == 2 else image[..., 0]
        return np.repeat(plane[..., None], 3, axis=2)
    if order == (0, 1, 2):
        return image[..., :3]
    return image[..., [2, 1, 0]] if channels == 3 else image[..., 2::-1]


def _norm_affine() -> tuple[np.ndarray, np.ndarray]:
    # (x/255 - mean)/std == x*scale - bias: one fused multiply-add per pixel
    std = np.asarray(IMAGENET_STD, np.float32)
    return (1.0 / (255.0 * std)).astype(np.float32), (np.asarray(IMAGENET_MEAN, np.float32) / std)


_SCALE, _BIAS = _norm_affine()


def preprocess_numpy(image: np.ndarray, encoding: str, size: InputSize,
                     out: torch.Tensor | None = None) -> tuple[torch.Tensor, Geometry]:
    """CPU path: resize with OpenCV, convert colour on the small image, normalise, pad.

    ``out`` may be a preallocated [1,3,H,W] float tensor of the padded size (reused buffers).
    Padding is zero after normalisation, i.e. the mean colour.
    """
    height, width = image.shape[:2]
    geometry = plan_geometry(height, width, size)
    rh, rw = geometry.resized_hw
    # Resize before colour conversion: it touches fewer pixels on the (usually smaller) output.
    source = image if image.ndim == 2 or image.shape[2] > 1 else image[..., 0]
    # OpenCV takes row-padded images as they are; anything else strided is packed first
    dense_rows = source.strides[-1] == 1 and (source.ndim == 2 or source.strides[1] == source.shape[2])
    if not dense_rows:
        source = np.ascontiguousarray(source)
    small = cv2.resize(source, (rw, rh), interpolation=cv2.INTER_LINEAR) if (rh, rw) != (height, width) \
        else source
    if small.ndim == 2:
        small = small[..., None]
    rgb = to_rgb(small, encoding)
    ph, pw = geometry.padded_hw
    if out is None or tuple(out.shape) != (1, 3, ph, pw):
        out = torch.empty((1, 3, ph, pw), dtype=torch.float32)
    target = out.numpy()[0]
    target[:, rh:, :] = 0.0
    target[:, :rh, rw:] = 0.0
    chw = np.transpose(rgb, (2, 0, 1))
    np.multiply(chw, _SCALE[:, None, None], out=target[:, :rh, :rw], casting="unsafe")
    target[:, :rh, :rw] -= _BIAS[:, None, None]
    return out, geometry


def preprocess_torch(image: torch.Tensor, encoding: str, size: InputSize, dtype: torch.dtype = torch.float32,
                     channels_last: bool = False) -> tuple[torch.Tensor, Geometry]:
    """Device path: ``image`` is a uint8 HxWxC (or HxW) tensor already on the target device.

    Colour conversion, bilinear resize (half-pixel centres, like OpenCV), normalisation and padding
    all run on ``image.device``; on CUDA call it inside the copy stream.
    """
    height, width = image.shape[:2]
    geometry = plan_geometry(height, width, size)
    channels, order = ENCODINGS[encoding]
    planes = image.reshape(height, width, -1)
    chw = planes.permute(2, 0, 1)[list(order)] if channels > 1 else planes.permute(2, 0, 1).expand(3, -1, -1)
    x = chw.unsqueeze(0).to(torch.float32)
    if geometry.resized_hw != (height, width):
        x = F.interpolate(x, size=geometry.resized_hw, mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255.0
    x = (x - mean) / std
    (rh, rw), (ph, pw) = geometry.resized_hw, geometry.padded_hw
    x = F.pad(x, (0, pw - rw, 0, ph - rh)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, geometry


def normalise_batch(images_uint8: torch.Tensor) -> torch.Tensor:
    """Training helper: [B,3,H,W] uint8 RGB -> normalised float, same constants as the runtime."""
    mean = torch.tensor(IMAGENET_MEAN, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std
