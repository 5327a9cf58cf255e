"""Camera image messages -> pixels: sensor_msgs/Image in any accepted encoding, and sensor_msgs/CompressedImage.

The messages are read by their fields only, so the node (rclpy messages) and the bag reader (rosbags
messages) decode alike. The plain encodings (``contract.pixels.ENCODINGS``) stay zero-copy views
(``image_to_array``; a row-padded ``step`` becomes a strided view).
Bayer, YUV 4:2:2 and NV12/NV21 frames are converted to rgb8 with one OpenCV call on a view of the message
buffer; mono16 becomes mono8 as a view of the high bytes (no copy, the 65535 -> 255 scaling of cv_bridge).
CompressedImage frames (JPEG, PNG; the ``compressed`` image_transport) are size-checked from their
header, then decoded strictly: a damaged frame is refused and counted (corrupt_compressed), never
half-decoded. Every refusal is a ``BadImage`` with a counter reason and one sentence saying what to do.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np
import simplejpeg

from ros_amf.contract.pixels import DEPTH_ENCODINGS, ENCODINGS, PACKED_ENCODINGS

DEFAULT_MAX_PIXELS = 4096 * 4096


class BadImage(ValueError):
    """An input image that cannot be used; ``reason`` is the counter key, the message says what to fix."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def checked_size(msg, max_pixels: int) -> tuple[int, int, int]:
    """(height, width, step) of an image message, or BadImage for an empty or oversized one."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise BadImage("zero_size", f"image is {width}x{height} pixels; the camera published an empty image.")
    if height * width > max_pixels:
        raise BadImage("too_large", f"image is {width}x{height} = {height * width} pixels, above max_image_pixels="
                                    f"{max_pixels}; lower the camera resolution or raise max_image_pixels.")
    return height, width, step


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Image message -> (HxWxC or HxW uint8 view, encoding); raises BadImage with a counter reason."""
    encoding = msg.encoding.lower()
    if encoding not in ENCODINGS:
        raise BadImage("unsupported_encoding", f"image encoding {msg.encoding!r} is not supported; publish one of "
                                               f"{sorted(ENCODINGS)}.")
    height, width, step = checked_size(msg, max_pixels)
    channels = ENCODINGS[encoding][0]
    row_bytes = width * channels
    if step < row_bytes:
        raise BadImage("bad_step", f"image step {step} is smaller than width*channels = {row_bytes} for "
                                   f"{encoding}; the publisher fills 'step' wrongly.")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    # the last row need not carry its padding
    if data.size < step * (height - 1) + row_bytes:
        raise BadImage("truncated", f"image data has {data.size} bytes but {height} rows of step {step} need "
                                    f"{step * height}; the message is truncated.")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    if channels == 1:
        return rows, encoding
    return rows.reshape(height, width, channels), encoding


# ROS encoding -> OpenCV conversion to RGB. OpenCV 5 names Bayer patterns like ROS does (first row first).
_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerRGGB2RGB, "bayer_bggr8": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGBRG2RGB, "bayer_grbg8": cv2.COLOR_BayerGRBG2RGB,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    "nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21,
}
ACCEPTED = sorted(ENCODINGS) + sorted(PACKED_ENCODINGS)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"


def _depth_refusal(encoding: str, what: str) -> BadImage:
    return BadImage("unsupported_encoding", f"{what} {encoding!r} is a depth image (distances, not brightness); "
                                            "subscribe the node to the camera's colour or mono image instead.")


def image_to_pixels(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (pixels, one of ENCODINGS): a zero-copy view for the plain encodings and mono16,
    one conversion for bayer / yuv422 / nv12 / nv21; raises BadImage with a counter reason."""
    encoding = msg.encoding.lower()
    if encoding in ENCODINGS:
        return image_to_array(msg, max_pixels)
    if encoding in DEPTH_ENCODINGS:
        raise _depth_refusal(msg.encoding, "image encoding")
    layout = PACKED_ENCODINGS.get(encoding)
    if layout is None:
        raise BadImage("unsupported_encoding", f"image encoding {msg.encoding!r} is not supported; publish one of "
                                               f"{ACCEPTED}, or a CompressedImage (image_transport: compressed).")
    height, width, step = checked_size(msg, max_pixels)
    if (layout.even_width and width % 2) or (layout.even_height and height % 2):
        raise BadImage("odd_size", f"{encoding} image is {width}x{height} pixels, but {encoding} stores pixels in "
                                   "pairs and needs an even width" + (" and height" if layout.even_height else "")
                                   + "; the camera driver fills width/height wrongly.")
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise BadImage("bad_step", f"image step {step} is smaller than the {row_bytes} bytes a row of {width} "
                                   f"{encoding} pixels needs; the publisher fills 'step' wrongly.")
    buffer_rows = height + height // 2 if layout.chroma_plane else height
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * (buffer_rows - 1) + row_bytes:   # the last row need not carry its padding
        raise BadImage("truncated", f"image data has {data.size} bytes but {buffer_rows} rows of step {step} "
                                    f"need {step * buffer_rows}; the message is truncated.")
    rows = np.lib.stride_tricks.as_strided(data, shape=(buffer_rows, row_bytes), strides=(step, 1))
    if encoding == "mono16":
        # the high byte of each pixel: the odd bytes of a little-endian row, the even ones of a big-endian row
        return rows[:, (0 if msg.is_bigendian else 1)::2], "mono8"
    if layout.bytes_per_pixel == 2:
        rows = rows.reshape(buffer_rows, width, 2)
    return cv2.cvtColor(rows, _TO_RGB[encoding]), "rgb8"


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None when no readable header is found."""
    if data[:8] == _PNG_MAGIC and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == _JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        return width, height
    return None


def _decode(data: bytes) -> np.ndarray | None:
    """JPEG strictly (libjpeg-turbo: any warning, e.g. damaged entropy data, fails; OpenCV would return a
    half-grey frame), PNG with OpenCV (CRC and zlib errors fail). None when the frame does not decode."""
    if data[:2] == _JPEG_MAGIC:
        try:
            colourspace = simplejpeg.decode_jpeg_header(data)[2]
            return simplejpeg.decode_jpeg(data, colorspace="GRAY" if colourspace == "Gray" else "BGR", strict=True)
        except ValueError:
            return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def compressed_to_pixels(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (pixels, one of ENCODINGS); raises BadImage with a reason."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt or fmt.split(";")[0].strip() in DEPTH_ENCODINGS:
        raise _depth_refusal(msg.format, "compressed frame of format")
    data = bytes(msg.data)
    if not data:
        raise BadImage("zero_size", "compressed frame has no data; the camera published an empty image.")
    size = compressed_size(data)
    if size is None:
        if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
            raise BadImage("unsupported_encoding", f"compressed format {msg.format!r} is not supported; publish "
                                                   "JPEG or PNG (image_transport's compressed plugin does).")
        raise BadImage("corrupt_compressed", f"compressed frame ({len(data)} bytes, format {msg.format!r}) has no "
                                             "readable JPEG or PNG header; the frame is damaged.")
    width, height = size
    if width * height > max_pixels:
        raise BadImage("too_large", f"compressed frame is {width}x{height} = {width * height} pixels, above "
                                    f"max_image_pixels={max_pixels}; lower the camera resolution or raise "
                                    "max_image_pixels.")
    if width == 0 or height == 0:
        raise BadImage("zero_size", f"compressed frame is {width}x{height} pixels; the camera published an "
                                    "empty image.")
    image = _decode(data)
    if image is None or image.shape[:2] != (height, width):
        raise BadImage("corrupt_compressed", f"compressed frame ({len(data)} bytes, {width}x{height}, format "
                                             f"{msg.format!r}) does not decode; the frame is damaged or truncated.")
    if image.dtype == np.uint16:             # 16-bit PNG: keep the high byte, as for mono16
        image = (image >> 8).astype(np.uint8)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return (image if image.ndim == 2 else image[..., 0]), "mono8"
    # decoders give BGR(A); a frame compressed from rgb8 without swapping says so ("... compressed rgb8")
    swapped = fmt.rstrip().endswith("compressed rgb8") or fmt.rstrip().endswith("compressed rgba8")
    if channels == 3:
        return image, "rgb8" if swapped else "bgr8"
    return image, "rgba8" if swapped else "bgra8"
