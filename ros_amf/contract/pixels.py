"""What the networks expect of a pixel: supported image encodings, channel order and normalisation.

Every path that feeds a model (runtime CPU and device paths, training batches, evaluation)
normalises with :func:`normalise` or the equivalent fused :meth:`PixelNormalisation.affine`, so
there is one definition of the maths: ``(x / 255 - mean) / std`` on RGB.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:   # torch is imported only where a tensor is normalised: bag readers stay light
    import torch

# ImageNet statistics on 0..1 RGB (torchvision weights); the shipped models were trained with them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# encoding -> (channels in the message, channel indices that give R, G, B)
ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}


class PackedEncoding(NamedTuple):
    """Layout of an encoding that is converted to one of ENCODINGS before the network (contract/image_messages)."""
    bytes_per_pixel: int     # bytes of one pixel in a row of the buffer
    chroma_plane: bool       # a half-height interleaved UV plane follows the Y rows (nv12/nv21)
    even_width: bool         # pixels come in pairs along a row (2x2 bayer cells, 4:2:2 and 4:2:0 chroma)
    even_height: bool        # rows come in pairs (2x2 bayer cells, 4:2:0 chroma)
    decoded: str             # the ENCODINGS entry it becomes


_BAYER = PackedEncoding(1, False, True, True, "rgb8")
_YUV422 = PackedEncoding(2, False, True, False, "rgb8")
_NV = PackedEncoding(1, True, True, True, "rgb8")

# ROS names (sensor_msgs/image_encodings.hpp), lower-cased like every incoming encoding
PACKED_ENCODINGS: dict[str, PackedEncoding] = {
    "bayer_rggb8": _BAYER, "bayer_bggr8": _BAYER, "bayer_gbrg8": _BAYER, "bayer_grbg8": _BAYER,
    "uyvy": _YUV422, "yuv422": _YUV422,            # U Y0 V Y1 ("yuv422" is the deprecated name of uyvy)
    "yuyv": _YUV422, "yuv422_yuy2": _YUV422,       # Y0 U Y1 V
    "nv12": _NV, "nv21": _NV,
    "mono16": PackedEncoding(2, False, False, False, "mono8"),
}

# depth images look like mono16 / float images but carry distances, not brightness: never segment them
DEPTH_ENCODINGS = frozenset({"16uc1", "32fc1"})


@dataclass(frozen=True)
class PixelNormalisation:
    """Mean and std on 0..1 RGB that a set of weights expects."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, bias) with (x/255 - mean)/std == x*scale - bias: one fused multiply-add per pixel."""
        std = np.asarray(self.std, np.float32)
        return (1.0 / (255.0 * std)).astype(np.float32), (np.asarray(self.mean, np.float32) / std)


IMAGENET = PixelNormalisation()


@functools.lru_cache(maxsize=None)
def _affine_on(norm: PixelNormalisation, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: a host->device copy per frame would make the host wait for the GPU
    import torch
    with torch.inference_mode(False):   # also usable outside inference mode (training)
        scale, bias = (torch.from_numpy(a).to(device) for a in norm.affine())
    return scale, bias


def normalise(images: torch.Tensor, norm: PixelNormalisation = IMAGENET) -> torch.Tensor:
    """[B,3,H,W] or [3,H,W] RGB in 0..255 (uint8 or float) -> float32 (x/255 - mean)/std."""
    scale, bias = _affine_on(norm, images.device)
    shape = (3, 1, 1) if images.dim() == 3 else (1, 3, 1, 1)
    return images.float() * scale.view(shape) - bias.view(shape)


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """HxWxC (or HxW for mono8) array of ``encoding`` -> HxWx3 RGB uint8 (a view where possible)."""
    channels, order = ENCODINGS[encoding]
    if channels == 1:
        plane = image if image.ndim == 2 else image[..., 0]
        return np.repeat(plane[..., None], 3, axis=2)
    if order == (0, 1, 2):
        return image[..., :3]
    return image[..., [2, 1, 0]] if channels == 3 else image[..., 2::-1]
