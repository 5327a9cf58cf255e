"""Image pre-processing shared by the runtime, training pipelines and evaluators.

RGB uint8 resized keeping aspect (``contract.input_size``), normalised (``contract.pixels``),
padded bottom/right to a multiple of 32.
Two implementations of the same maths: ``preprocess_numpy`` (OpenCV, the fast CPU path) and
``preprocess_torch`` (any torch device; the GPU path does colour conversion, resize and
normalisation on the device).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ros_amf.contract.input_size import Geometry, InputSize, plan_geometry
from ros_amf.contract.pixels import ENCODINGS, IMAGENET, PixelNormalisation, normalise, to_rgb

__all__ = ["Geometry", "InputSize", "plan_geometry", "preprocess_numpy", "preprocess_torch", "to_rgb"]



@functools.lru_cache(maxsize=8)
def _affine(pixels: PixelNormalisation) -> tuple[np.ndarray, np.ndarray]:
    return pixels.affine()


def preprocess_numpy(image: np.ndarray, encoding: str, size: InputSize, out: torch.Tensor | None = None,
                     pixels: PixelNormalisation = IMAGENET) -> tuple[torch.Tensor, Geometry]:
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
    scale, bias = _affine(pixels)
    np.multiply(chw, scale[:, None, None], out=target[:, :rh, :rw], casting="unsafe")
    target[:, :rh, :rw] -= bias[:, None, None]
    return out, geometry


def preprocess_torch(image: torch.Tensor, encoding: str, size: InputSize, dtype: torch.dtype = torch.float32,
                     channels_last: bool = False, pixels: PixelNormalisation = IMAGENET
                     ) -> tuple[torch.Tensor, Geometry]:
    """Device path: ``image`` is a uint8 HxWxC (or HxW) tensor already on the target device.

    Colour conversion, bilinear resize (half-pixel centres, like OpenCV), normalisation and padding
    all run on ``image.device``; on CUDA call it inside the copy stream.
    """
    height, width = image.shape[:2]
    geometry = plan_geometry(height, width, size)
    _, order = ENCODINGS[encoding]
    planes = image.reshape(height, width, -1).permute(2, 0, 1)
    # channels picked by Python ints: indexing with a list would copy it to the device every frame
    chw = torch.stack([planes[i] for i in order])
    x = chw.unsqueeze(0).to(torch.float32)
    if geometry.resized_hw != (height, width):
        x = F.interpolate(x, size=geometry.resized_hw, mode="bilinear", align_corners=False)
    x = normalise(x, pixels)
    (rh, rw), (ph, pw) = geometry.resized_hw, geometry.padded_hw
    x = F.pad(x, (0, pw - rw, 0, ph - rh)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, geometry
