"""The per-frame work: pre-processing, inference and post-processing of one camera frame.

Each model runs at its own input size; a frame is pre-processed once per distinct size, so two
models that share a size share the tensor. In joint mode (one backbone forward feeds both heads)
both models run at the instance model's size. ``pipeline.Engine`` schedules these stages on
threads and CUDA streams; here they are plain calls on one frame.

CPU path: OpenCV pre-processing, then the tensor moves to the device. Device path (CUDA, or forced
with ``device_path``): the raw image goes through a pinned buffer to the device, where colour
conversion, resize and normalisation run on the copy stream; each model runs on its own compute
stream, post-processing on a third, ordered by CUDA events.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ros_amf.contract.input_size import Geometry, InputSize
from ros_amf.contract.pixels import PixelNormalisation, to_rgb
from ros_amf.modeling.sparseinst.postprocess import masks_at_image_size, rank_candidates
from ros_amf.runtime.backends import backend_runs, check_backend_name
from ros_amf.runtime.compile import check_compile_modes
from ros_amf.runtime.cuda import PinnedRing, StreamSet
from ros_amf.runtime.loading import LoadedModel, check_device, joint_model, pixels_of
from ros_amf.runtime.outputs import (BadModelOutput, FrameResult, HostCopy, NonFiniteOutput, SemanticOutput,
                                     boxes_in_camera_pixels, instance_output, instance_table, output_hw,
                                     semantic_labels)
from ros_amf.runtime.preprocess import preprocess_numpy, preprocess_torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class FrameSettings:
    """How each frame is processed, whatever schedules it."""
    # task -> network input; a task left out runs at its model config's own input_size. Joint mode
    # runs both models at the instance model's size (one backbone forward on one input).
    input_sizes: dict[str, InputSize] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"          # fp32 | fp16
    channels_last: bool = False
    joint: bool = False              # instance + semantic heads on one backbone forward
    score_threshold: float = 0.3
    mask_threshold: float = 0.45
    max_instances: int = 100
    class_filter: tuple[int, ...] = ()   # instance class ids to keep; empty = all
    keep_masks: bool = False         # keep per-instance masks in results (offline evaluation)
    device_path: bool | None = None  # None: torch pre/post on the device iff it is CUDA; True forces it
    record_stream_times: bool = False  # GPU: record per-stream busy intervals (benchmark overlap)
    # who runs the forward: torch | onnxruntime | openvino | auto (runtime.backends; pre/post stay torch)
    backend: str = "torch"
    # task -> how its torch forward runs: none | inductor (torch.compile) | cudagraphs (CUDA only); a task
    # left out runs eager (runtime.compile)
    compile: dict[str, str] = field(default_factory=dict)
    # size of the id image and label map: full = the camera's, network = the resized model input's
    # (boxes stay in camera pixels); runtime.outputs.OUTPUT_SCALES
    output_scale: str = "full"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision '{self.precision}' is not supported; use one of {sorted(PRECISIONS)}.")
        check_backend_name(self.backend)
        check_compile_modes(self.compile)


@dataclass
class CameraFrame:
    """One image as it entered the runtime, with the caller's tag (the ROS header)."""
    seq: int
    image: np.ndarray
    encoding: str
    tag: Any
    t_in: float
    keep_image: bool


@dataclass
class NetworkInput:
    tensor: torch.Tensor
    geometry: Geometry


@dataclass
class PreparedFrame:
    frame: CameraFrame
    inputs: dict[str, NetworkInput]   # task -> its input; tasks with the same size share one
    ready: Any                        # CUDA event: the inputs exist on the device (None on CPU)
    timings_ms: dict[str, float]


@dataclass
class InferredFrame:
    prepared: PreparedFrame
    outputs: dict[str, Any]
    done: dict[str, Any]              # task -> CUDA event: its model finished


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


INSTANCE_KEYS = ("pred_logits", "pred_masks", "pred_scores")


def _finite_flags(tensors: list[torch.Tensor]) -> torch.Tensor:
    # one float32 sum is NaN/inf iff some element is (barring sums beyond 3e38): cheaper than isfinite().all();
    # the flags stay on the device and travel to the host with the frame's results
    return torch.stack([torch.isfinite(t.sum(dtype=torch.float32)) if t.is_floating_point()
                        else torch.ones((), dtype=torch.bool, device=t.device) for t in tensors])


def resolve_input_sizes(settings: FrameSettings, models: dict[str, LoadedModel]) -> tuple[dict[str, InputSize],
                                                                                         list[str]]:
    """Each task's network input, and warnings about sizes that cannot be honoured."""
    sizes = {task: settings.input_sizes.get(task, model.input_size) for task, model in models.items()}
    if not settings.joint:
        return sizes, []
    shared, asked = sizes["instance"], settings.input_sizes.get("semantic")
    warnings = []
    if asked is not None and asked != shared:
        warnings.append(f"joint mode: the semantic head runs on the instance backbone's features at the instance "
                        f"input size {shared.short_side}/{shared.max_long_side}; the semantic input size "
                        f"{asked.short_side}/{asked.max_long_side} is not used.")
    return {task: shared for task in sizes}, warnings


class FrameStages:
    """The models on their device and the three stages of one frame; ``warnings`` says what start-up noticed."""

    def __init__(self, settings: FrameSettings, instance: LoadedModel | None = None,
                 semantic: LoadedModel | None = None, staging_slots: int = 4):
        if instance is None and semantic is None:
            raise ValueError("the engine needs at least one model (instance and/or semantic).")
        self.settings = settings
        self.device = check_device(settings.device)
        self.dtype = PRECISIONS[settings.precision]
        self.models = {m.task: m for m in (instance, semantic) if m is not None}
        for model in self.models.values():
            model.module.to(self.device, self.dtype).eval()
            if settings.channels_last:
                model.module.to(memory_format=torch.channels_last)
        self.warnings: list[str] = []
        self.joint = None
        if settings.joint:
            if len(self.models) < 2:
                raise ValueError("joint mode needs both an instance and a semantic model; set joint to false.")
            self.joint, joint_warnings = joint_model(self.models["instance"].module, self.models["semantic"].module)
            self.warnings += joint_warnings
        self.input_sizes, size_warnings = resolve_input_sizes(settings, self.models)
        self.warnings += size_warnings
        # what each model's weights expect of a pixel (ImageNet mean/std, or e.g. [-1, 1] for EfficientNet-Lite)
        self.pixels = {task: pixels_of(model.module) for task, model in self.models.items()}
        if self.joint is not None:   # one backbone forward: the instance model's normalisation for both heads
            self.pixels["semantic"] = self.pixels["instance"]
        # one network input per distinct (size, normalisation); the combined node usually needs two
        self.input_keys = {task: (self.input_sizes[task], self.pixels[task]) for task in self.input_sizes}
        # (tasks, module) per forward: joint mode runs one JointModel forward for both tasks
        runs = [(("instance", "semantic"), self.joint)] if self.joint is not None else \
            [((task,), model.module) for task, model in self.models.items()]
        self.backend, self.runs = backend_runs(settings.backend, runs, self.device, settings.precision,
                                               any(m.random_weights for m in self.models.values()), self.warnings,
                                               settings.compile)
        self.device_path = settings.device_path if settings.device_path is not None else self.device.type == "cuda"
        self.streams = StreamSet(self.device, timing=settings.record_stream_times)
        self.pinned = PinnedRing(slots=staging_slots, pinned=self.device.type == "cuda")
        self.class_filter = (torch.tensor(settings.class_filter, dtype=torch.long, device=self.device)
                             if settings.class_filter else None)
        # on a CPU reading a count costs nothing, and cutting the candidates to the live ones spares their
        # full-size masks; elsewhere the candidates keep their fixed number so nothing waits for the device
        self.cut_candidates = self.device.type == "cpu" and not self.device_path

    def preprocess(self, frame: CameraFrame) -> PreparedFrame:
        start = time.perf_counter()
        by_key: dict[tuple[InputSize, PixelNormalisation], NetworkInput] = {}
        if not self.device_path:
            for size, pixels in dict.fromkeys(self.input_keys.values()):
                tensor, geometry = preprocess_numpy(frame.image, frame.encoding, size, pixels=pixels)
                tensor = tensor.to(self.device, self.dtype)
                if self.settings.channels_last:
                    tensor = tensor.contiguous(memory_format=torch.channels_last)
                by_key[size, pixels] = NetworkInput(tensor, geometry)
            ready = None
        else:
            # one host->device copy of the raw image, then every size is made from it on the device
            slot, host = self.pinned.stage(frame.image)
            stream = self.streams.copy
            with self.streams.use(stream):
                begin = self.streams.record(stream)
                device_image = host.to(self.device, non_blocking=True)
                self.pinned.copied(slot, self.streams.record(stream))
                for size, pixels in dict.fromkeys(self.input_keys.values()):
                    by_key[size, pixels] = NetworkInput(*preprocess_torch(device_image, frame.encoding, size,
                                                                          self.dtype, self.settings.channels_last,
                                                                          pixels=pixels))
                ready = self.streams.record(stream)
            self.streams.mark_busy("copy+preprocess", begin, ready)
        inputs = {task: by_key[key] for task, key in self.input_keys.items()}
        return PreparedFrame(frame, inputs, ready, {"preprocess": elapsed_ms(start)})

    def infer(self, prepared: PreparedFrame) -> InferredFrame:
        # On CUDA this only queues the kernels (the models' streams run side by side); the host-side
        # "inference" time is then launch time, the GPU time per stream comes from the timing events.
        start = time.perf_counter()
        outputs, done = {}, {}
        with torch.inference_mode():
            for tasks, module in self.runs:
                stream = self.streams.compute[tasks[0]]
                tensor = prepared.inputs[tasks[0]].tensor
                with self.streams.use(stream):
                    self.streams.wait(stream, prepared.ready)
                    self.streams.keep_alive(tensor, stream)
                    begin = self.streams.record(stream)
                    results = module(tensor)
                    finished = self.streams.record(stream)
                    for task, output in zip(tasks, results if len(tasks) > 1 else [results]):
                        outputs[task], done[task] = output, finished
                    self.streams.mark_busy(f"inference/{'+'.join(tasks)}", begin, finished)
        prepared.timings_ms["inference"] = elapsed_ms(start)
        return InferredFrame(prepared, outputs, done)

    def postprocess(self, inferred: InferredFrame) -> FrameResult:
        start = time.perf_counter()
        prepared = inferred.prepared
        frame, inputs = prepared.frame, prepared.inputs
        result = FrameResult(seq=frame.seq, tag=frame.tag, geometries={t: i.geometry for t, i in inputs.items()},
                             t_in=frame.t_in, timings_ms=prepared.timings_ms)
        stream = self.streams.post
        with torch.inference_mode(), self.streams.use(stream):
            begin = None
            for event in inferred.done.values():
                self.streams.wait(stream, event)
            if stream is not None:   # outputs were allocated on the compute streams
                for output in inferred.outputs.values():
                    for tensor in (output.values() if isinstance(output, dict) else [output]):
                        if torch.is_tensor(tensor):
                            self.streams.keep_alive(tensor, stream)
                begin = self.streams.record(stream)
            device: dict[str, torch.Tensor] = {}
            if "instance" in inferred.outputs:
                device.update(self._instance_on_device(inferred.outputs["instance"], inputs["instance"].geometry))
            if "semantic" in inferred.outputs:
                logits = inferred.outputs["semantic"]
                logits = logits["logits"] if isinstance(logits, dict) else logits
                device["semantic.finite"] = _finite_flags([logits])
                geometry = inputs["semantic"].geometry
                device["semantic.labels"] = semantic_labels(logits, geometry,
                                                            output_hw(geometry, self.settings.output_scale))
            # device->host: one packed non-blocking copy on the post stream, then one wait for it
            transfer = HostCopy(device, pack=self.device_path)
            end = self.streams.record(stream)
            if end is not None:
                end.synchronize()
            self.streams.mark_busy("postprocess", begin, end)
        host = transfer.arrays()
        if "instance.finite" in host:
            for key, finite in zip(INSTANCE_KEYS, host["instance.finite"]):
                if not finite:
                    raise NonFiniteOutput(f"instance model output '{key}' holds NaN/inf")
            geometry = inputs["instance"].geometry
            result.instances = boxes_in_camera_pixels(
                instance_output({name.split(".", 1)[1]: array for name, array in host.items()
                                 if name.startswith("instance.")}),
                output_hw(geometry, self.settings.output_scale), geometry.original_hw)
        if "semantic.finite" in host:
            if not host["semantic.finite"].all():
                raise NonFiniteOutput("semantic model output holds NaN/inf")
            result.semantic = SemanticOutput(labels=host["semantic.labels"])
        if frame.keep_image:
            result.image_rgb = to_rgb(frame.image if frame.image.ndim == 3 else frame.image[..., None],
                                      frame.encoding)
        result.timings_ms["postprocess"] = elapsed_ms(start)
        return result

    def _instance_on_device(self, outputs: dict[str, torch.Tensor], geometry: Geometry) -> dict[str, torch.Tensor]:
        for key in INSTANCE_KEYS:
            if not isinstance(outputs, dict) or key not in outputs:
                raise BadModelOutput(f"instance model output lacks '{key}'")
        cfg = self.settings
        # the threshold applies to the class score and, as min_score, to the final (mask-rescored) score
        # that is published
        found = rank_candidates(outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_scores"][0],
                                cfg.score_threshold, cfg.mask_threshold, cfg.max_instances,
                                min_score=cfg.score_threshold)
        if self.cut_candidates:
            found = found.first(int(found.live.sum()))
        masks = masks_at_image_size(found.probs, geometry.resized_hw, output_hw(geometry, cfg.output_scale),
                                    cfg.mask_threshold)
        table = instance_table(masks, found.scores, found.classes, found.live, self.class_filter, cfg.keep_masks)
        tensors = {"finite": _finite_flags([outputs[key] for key in INSTANCE_KEYS]), **table.tensors()}
        return {f"instance.{name}": tensor for name, tensor in tensors.items()}
