"""ONNX export of the inference forward: plain tensors in and out, one fixed input shape per graph.

The models' own forwards return dicts (and the semantic model an ``AfmaFactors`` object next to its
logits, for the training loss); ``ExportForward`` flattens what inference reads into a tuple of
tensors with fixed names, and ``outputs_from_arrays`` rebuilds the dicts the runtime's
post-processing takes, so pre- and post-processing stay outside the graph and shared with torch.

Two rewrites make the graphs cheaper for the CPU engines without changing the maths
(``graph_module``): the instance masks leave the graph at the mask branch's stride and are upsampled x2
in ``outputs_from_arrays`` (OpenVINO re-lays the large upsampled output at a cost of ~8 ms per frame),
and GroupNorm takes its statistics from per-channel moments (``MomentsGroupNorm``), because the
reshape of the whole feature map the standard form exports to forces OpenVINO to convert layouts
around every normalisation. Measured on the shipped instance model at 384x512, two threads: 26.1 ms
-> 17.4 ms in OpenVINO; onnxruntime is unchanged.

Three kinds of graph: ``instance`` (AMF-SparseInst), ``semantic`` (AFMA host network) and ``joint``
(one backbone forward feeding both heads, ``runtime.loading.JointModel``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ros_amf.contract.input_size import InputSize
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation
from ros_amf.modeling.semantic.model import SemanticSegmentationModel
from ros_amf.modeling.sparseinst.decoder import GroupIAMDecoder, upsample_masks
from ros_amf.runtime.loading import JointModel
from ros_amf.runtime.preprocess import preprocess_numpy

OPSET = 18
INPUT_NAME = "images"
# the graph's masks are at the mask branch's stride; outputs_from_arrays upsamples them to "pred_masks"
INSTANCE_OUTPUTS = ("pred_logits", "pred_masks_stride8", "pred_scores")
INSTANCE_KEYS = ("pred_logits", "pred_masks", "pred_scores")
MASK_UPSAMPLE = 2.0
# part of every cache key: a graph exported under another layout of outputs is never reused
GRAPH_FORMAT = 2
OUTPUT_NAMES = {
    "instance": INSTANCE_OUTPUTS,
    "semantic": ("logits",),
    "joint": INSTANCE_OUTPUTS + ("logits",),
}
# How far an exported graph may drift from torch on the sample input: fused kernels reorder float
# sums (measured here: 2.6e-3 on the instance mask logits); anything beyond this is a broken export.
MAX_ABS_DIFF = 2e-2


class MomentsGroupNorm(nn.GroupNorm):
    """GroupNorm with the same maths (two-pass mean and biased variance per sample and group), its statistics
    taken from per-channel means of the feature map: only [N, C]-sized tensors are reshaped, so an engine
    keeps the map in its own blocked layout instead of converting it around a [N, G, -1] reshape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        groups = self.num_groups

        def per_group(per_channel: torch.Tensor) -> torch.Tensor:     # [N, C] -> group average, [N, C, 1, 1]
            grouped = per_channel.reshape(batch, groups, channels // groups).mean(-1, keepdim=True)
            return grouped.expand(batch, groups, channels // groups).reshape(batch, channels, 1, 1)

        centred = x - per_group(x.mean((2, 3)))
        variance = per_group((centred * centred).mean((2, 3)))
        scale = torch.rsqrt(variance + self.eps)
        if self.affine:
            return centred * (scale * self.weight.view(1, channels, 1, 1)) + self.bias.view(1, channels, 1, 1)
        return centred * scale


def graph_module(module: nn.Module, moments_group_norm: bool = True) -> nn.Module:
    """A copy of ``module`` in the form that is exported: instance masks left at the mask branch's stride and,
    when asked, ``MomentsGroupNorm`` for every GroupNorm. The caller's module is not changed."""
    graph = copy.deepcopy(module)
    for layer in graph.modules():
        if isinstance(layer, GroupIAMDecoder):
            if layer.scale_factor != MASK_UPSAMPLE:
                raise ValueError(f"the instance decoder upsamples masks x{layer.scale_factor}; exported graphs "
                                 f"assume x{MASK_UPSAMPLE}.")
            layer.upsample_in_forward = False
        if moments_group_norm and type(layer) is nn.GroupNorm:
            layer.__class__ = MomentsGroupNorm
    return graph


class ExportForward(nn.Module):
    """The inference forward of one graph kind as a tuple of tensors (``OUTPUT_NAMES[kind]`` order), computed
    by ``graph_module(module)`` (``moments_group_norm=False``: with torch's own GroupNorm, the reference)."""

    def __init__(self, module: nn.Module, kind: str, moments_group_norm: bool = True):
        super().__init__()
        if kind not in OUTPUT_NAMES:
            raise ValueError(f"graph kind '{kind}' is unknown; use one of {sorted(OUTPUT_NAMES)}.")
        self.module = graph_module(module, moments_group_norm)
        self.kind = kind

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(images)
        if self.kind == "instance":
            return tuple(out[key] for key in INSTANCE_KEYS)
        if self.kind == "semantic":
            return (_semantic_logits(out),)
        instance, semantic = out
        return tuple(instance[key] for key in INSTANCE_KEYS) + (_semantic_logits(semantic),)


def _semantic_logits(out: Any) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) else out


def masks_leave_at_stride8(module: nn.Module) -> bool:
    """Whether ``graph_module`` moves the x2 mask upsampling of ``module`` out of the graph (a SparseInst
    decoder is in it); other instance modules (test doubles) export their masks as they return them."""
    return any(isinstance(layer, GroupIAMDecoder) for layer in module.modules())


def outputs_from_arrays(kind: str, arrays: list[np.ndarray], upsample: bool = True) -> Any:
    """Backend outputs (in ``OUTPUT_NAMES[kind]`` order) -> what the torch module would have returned;
    ``upsample``: the graph's masks are at stride 8 (``masks_leave_at_stride8`` of the exported module)."""
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    if kind == "semantic":
        return {"logits": tensors[0]}
    instance = dict(zip(INSTANCE_KEYS, tensors[:3]))
    if upsample:
        instance["pred_masks"] = upsample_masks(instance["pred_masks"], MASK_UPSAMPLE)
    return instance if kind == "instance" else (instance, {"logits": tensors[3]})


def graph_kind(module: nn.Module) -> str:
    """``instance``, ``semantic`` or ``joint`` from what ``module`` is."""
    if isinstance(module, JointModel):
        return "joint"
    return "semantic" if isinstance(module, SemanticSegmentationModel) else "instance"


def weights_digest(module: nn.Module) -> str:
    """sha256 of what the graph bakes in: the checkpoint content (config and every weight) and the source
    of the modules that compute the forward, so an edited layer never reuses a graph exported before."""
    digest = hashlib.sha256(type(module).__name__.encode())
    digest.update(repr(getattr(module, "cfg", None)).encode())
    sources = sorted({getattr(sys.modules.get(type(m).__module__), "__file__", None) or "" for m in module.modules()})
    for source in sources:
        if source.endswith(".py") and os.path.isfile(source):
            digest.update(Path(source).read_bytes())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def export_onnx(module: nn.Module, kind: str, hw: tuple[int, int], path: str | Path) -> Path:
    """Export the fp32 CPU inference forward at the fixed padded input size ``hw`` to one ONNX file."""
    height, width = hw
    if height % 32 or width % 32:
        raise ValueError(f"export size {height}x{width} is not a multiple of 32; give the padded network input "
                         "size (ros_amf.contract.input_size.plan_geometry says which one a camera gets).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportForward(module, kind).eval()
    sample = torch.zeros(1, 3, height, width)
    # the exporter reports each step on stdout and warns about torchvision ops we do not use
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (sample,), str(path), opset_version=OPSET, dynamo=True,
                              external_data=False, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES[kind]),
                              verbose=False)
    finally:
        quiet.setLevel(level)
    return path


def sample_input(camera_hw: tuple[int, int], size: InputSize | None = None, seed: int = 0,
                 pixels: PixelNormalisation = IMAGENET) -> np.ndarray:
    """A real synthetic street frame of ``camera_hw``, pre-processed at ``size`` (default: no resize) and
    normalised as the model's weights expect (``pixels``), as the runtime would feed it: the input of the check
    that an exported graph reproduces torch."""
    from ros_amf.data.synthetic.render import render_still
    height, width = camera_hw
    image = render_still(seed, 0, width=width, height=height).image
    tensor, _ = preprocess_numpy(image, "rgb8", size or InputSize(max(32, min(camera_hw)), max(camera_hw)),
                                 pixels=pixels)
    return tensor.numpy()


def torch_reference(module: nn.Module, kind: str, images: np.ndarray) -> list[np.ndarray]:
    """The graph's outputs as torch computes them with its own layers (torch's GroupNorm, not the rewrite)."""
    with torch.inference_mode():
        reference = ExportForward(module, kind, moments_group_norm=False)
        return [t.float().numpy() for t in reference(torch.from_numpy(images))]


def largest_difference(reference: list[np.ndarray], outputs: list[np.ndarray], kind: str) -> tuple[float, str]:
    """Largest absolute difference over the outputs, and the name of the output it is in."""
    worst, where = 0.0, ""
    for name, ref, got in zip(OUTPUT_NAMES[kind], reference, outputs):
        if ref.shape != got.shape:
            return float("inf"), f"{name} (shape {got.shape} instead of {ref.shape})"
        diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        if not np.isfinite(diff) or diff > worst:
            worst, where = (float("inf") if not np.isfinite(diff) else diff), name
    return worst, where


def check_reproduces(reference: list[np.ndarray], outputs: list[np.ndarray], kind: str, what: str) -> float:
    """Raise with one sentence when ``outputs`` drift from torch's beyond ``MAX_ABS_DIFF``; return the drift."""
    worst, where = largest_difference(reference, outputs, kind)
    if worst > MAX_ABS_DIFF:
        raise RuntimeError(f"{what} does not reproduce torch: output '{where}' differs by {worst:.3g} "
                           f"(> {MAX_ABS_DIFF}) on a synthetic frame; report it and use backend torch.")
    return worst



def torch_export_version() -> str:
    return f"torch-{torch.__version__}-opset{OPSET}-graph{GRAPH_FORMAT}"


__all__ = ["ExportForward", "GRAPH_FORMAT", "INPUT_NAME", "MAX_ABS_DIFF", "MomentsGroupNorm", "OUTPUT_NAMES",
           "check_reproduces", "export_onnx", "graph_kind", "graph_module", "largest_difference",
           "masks_leave_at_stride8", "outputs_from_arrays", "sample_input", "torch_export_version",
           "torch_reference", "weights_digest"]
