"""Pre-processing: geometry, colour conversion, and the CPU (OpenCV) and device (torch) paths agreeing."""
import numpy as np
import pytest
import torch

from ros_amf.contract.pixels import IMAGENET_MEAN, IMAGENET_STD
from ros_amf.runtime.preprocess import (InputSize, plan_geometry, preprocess_numpy,
                                        preprocess_torch, to_rgb)


def test_geometry_keeps_aspect_caps_long_side_and_pads_to_32():
    g = plan_geometry(480, 640, InputSize(320, 544))
    assert g.resized_hw == (320, 427) and g.padded_hw == (320, 448)
    g = plan_geometry(100, 1000, InputSize(320, 544))   # long side capped first
    assert g.resized_hw == (54, 544) and g.padded_hw == (64, 544)


def test_invalid_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="short_side"):
        InputSize(16, 8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_every_encoding_becomes_the_same_rgb(encoding):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    raw = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full((8, 12), 255, np.uint8)]),
           "bgra8": np.dstack([rgb[..., ::-1], np.zeros((8, 12), np.uint8)]), "mono8": rgb[..., 0]}[encoding]
    expected = np.repeat(rgb[..., :1], 3, 2) if encoding == "mono8" else rgb
    assert np.array_equal(to_rgb(raw, encoding), expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8"])
def test_cpu_and_device_paths_agree_on_a_row_padded_image(encoding):
    channels = {"rgb8": 3, "bgra8": 4, "mono8": 1}[encoding]
    rng = np.random.default_rng(1)
    padded = rng.integers(0, 256, (60, 90 * channels + 6), dtype=np.uint8)   # 6 bytes of step padding
    view = padded[:, :90 * channels]
    image = view if channels == 1 else view.reshape(60, 90, channels)
    size = InputSize(40, 64)   # 60x90 -> 40x60, padded to 64x64
    a, geometry = preprocess_numpy(image, encoding, size)
    b, _ = preprocess_torch(torch.from_numpy(np.ascontiguousarray(image)), encoding, size)
    assert a.shape == b.shape == (1, 3, *geometry.padded_hw)
    # OpenCV interpolates in fixed point and rounds to uint8: at most one grey level apart
    assert float((a - b).abs().max()) <= 1.0 / 255 / min(IMAGENET_STD) + 1e-4
    rh, rw = geometry.resized_hw
    assert np.all(a.numpy()[..., rh:, :] == 0) and np.all(a.numpy()[..., :, rw:] == 0)


def test_normalisation_uses_imagenet_statistics():
    image = np.full((32, 32, 3), 255, np.uint8)
    x, _ = preprocess_numpy(image, "rgb8", InputSize(32, 32))
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert np.allclose(x[0, :, 5, 5].numpy(), expected, atol=1e-5)
