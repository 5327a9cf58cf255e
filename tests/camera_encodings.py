"""Test-side camera encoders: an RGB frame -> the bytes a camera driver would publish in a given encoding.

Written independently of ros_amf/contract/image_messages.py: the Bayer mosaic samples the RGB planes by hand,
YUV 4:2:2 uses OpenCV's forward RGB->UYVY/YUYV, NV12/NV21 interleave the chroma planes of OpenCV's I420,
mono16 spreads 8-bit grey over 16 bits (v * 257, so full white is 65535).
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

BAYER = ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")
YUV422 = ("uyvy", "yuv422", "yuyv", "yuv422_yuy2")
NV = ("nv12", "nv21")
CONVERTED = BAYER + YUV422 + NV + ("mono16",)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer raw frame: each pixel keeps the one colour its filter passes (pattern = the 2x2 cell, row-major)."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


def grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def encode(rgb: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """An Image message of ``rgb`` in ``encoding``, rows padded by ``pad`` bytes."""
    height, width = rgb.shape[:2]
    if encoding in BAYER:
        rows = mosaic(rgb, encoding[6:10])
    elif encoding in ("uyvy", "yuv422"):
        rows = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY).reshape(height, width * 2)
    elif encoding in ("yuyv", "yuv422_yuy2"):
        rows = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV).reshape(height, width * 2)
    elif encoding in NV:
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)   # Y plane, then U plane, then V plane
        pixels, quarter = height * width, height * width // 4
        y = i420[:pixels].reshape(height, width)
        u = i420[pixels:pixels + quarter].reshape(height // 2, width // 2)
        v = i420[pixels + quarter:].reshape(height // 2, width // 2)
        first, second = (u, v) if encoding == "nv12" else (v, u)
        uv = np.stack([first, second], axis=2).reshape(height // 2, width)
        rows = np.concatenate([y, uv])
    elif encoding == "mono16":
        values = grey(rgb).astype(np.uint16) * 257
        rows = values.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(height, width * 2)
    elif encoding == "rgb8":
        rows = rgb.reshape(height, width * 3)
    elif encoding == "mono8":
        rows = grey(rgb)
    else:
        raise ValueError(encoding)
    padded = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    padded[:, :rows.shape[1]] = rows
    msg = Image(header=Header(frame_id="camera_optical"), height=height, width=width, encoding=encoding,
                is_bigendian=int(big_endian), step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


def compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> CompressedImage:
    """A CompressedImage as image_transport's compressed plugin writes it (BGR inside the file)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    assert ok
    msg = CompressedImage(header=Header(frame_id="camera_optical"), format=f"rgb8; {fmt} compressed bgr8")
    msg.data = data.tobytes()
    return msg
