"""The inference engine: pre-processing -> model(s) -> post-processing, pipelined.

One engine serves the ROS nodes, the bag replay and the offline evaluator, so what is measured
offline is what runs on the vehicle.

* CPU path: one thread per stage joined by bounded queues; torch and OpenCV release the GIL, so frame
  N+1 is pre-processed while N runs the model and N-1 is post-processed. Inference may use several
  worker threads (``inference_workers``; auto = one per core, one torch thread each): consecutive
  frames then run the model side by side, which on a CPU beats one frame spread over all cores
  (intra-op threads scale poorly on small inputs and collapse when the cores are shared). A reorder
  buffer keeps the outputs in frame order.
* GPU path: the same three threads, each issuing its work on its own CUDA stream (host->device copy +
  pre-processing, inference, post-processing + device->host), ordered by CUDA events; host staging
  buffers are pinned. The instance and semantic models run on two compute streams in parallel, or
  share one backbone forward in "joint" mode. When no CUDA device exists, ``StreamSet`` turns
  streams and events into no-ops so the same stage code runs (and is tested) on CPU.
* Overload ("latest-frame" policy, the default for live cameras): the input and the hand-over to
  inference are latest-frame slots; a new frame replaces a waiting one and the replaced frame is
  counted as dropped, so the model always gets the freshest frame and latency stays near one
  inference. The hand-over to post-processing blocks. Nothing grows without bound.
  ``lossless=True`` (offline evaluation, benchmarks of every frame) makes ``submit`` wait for room
  instead, and no frame is dropped.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ros_amf.runtime.loading import LoadedModel, check_device, share_backbone
from ros_amf.runtime.outputs import (BadModelOutput, FrameResult, InstanceOutput, NonFiniteOutput, SemanticOutput,
                                     id_map_dtype, prescreen_queries,
                                     instance_tensors, semantic_labels)
from ros_amf.runtime.preprocess import Geometry, InputSize, preprocess_numpy, preprocess_torch, to_rgb
from ros_amf.runtime.stats import PipelineStats

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class EngineConfig:
    input_size: InputSize = field(default_factory=InputSize)
    device: str = "cpu"
    precision: str = "fp32"          # fp32 | fp16
    channels_last: bool = False
    joint: bool = False              # instance + semantic heads on one backbone forward
    score_threshold: float = 0.3
    mask_threshold: float = 0.45
    max_instances: int = 100
    class_filter: tuple[int, ...] = ()   # instance class ids to keep; empty = all
    keep_masks: bool = False         # keep per-instance masks in results (offline evaluation)
    input_slots: int = 1             # frames that may wait at the input before the oldest is dropped
    stage_queue: int = 1             # frames that may wait between two stages
    lossless: bool = False           # True: submit() waits for room instead of dropping (offline use)
    inference_workers: int = 0       # 0 = auto: one per CPU core on CPU (torch threads 1 each), 1 on CUDA
    device_path: bool | None = None  # None: torch pre/post on the device iff it is CUDA; True forces it
    record_stream_times: bool = False  # GPU: record per-stream busy intervals (benchmark overlap)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision '{self.precision}' is not supported; use one of {sorted(PRECISIONS)}.")
        if self.input_slots < 1 or self.stage_queue < 1:
            raise ValueError("input_slots and stage_queue must be at least 1.")


class StreamSet:
    """CUDA streams and events of the GPU path; on CPU every call is a no-op (stream-free fallback)."""

    def __init__(self, device: torch.device, timing: bool = False):
        self.cuda = device.type == "cuda"
        self.timing = timing and self.cuda
        make = (lambda: torch.cuda.Stream(device)) if self.cuda else (lambda: None)
        self.copy, self.post = make(), make()
        self.compute = {"instance": make(), "semantic": make()}

    def use(self, stream):
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def record(self, stream) -> Any:
        if stream is None:
            return None
        event = torch.cuda.Event(enable_timing=self.timing)
        event.record(stream)
        return event

    @staticmethod
    def wait(stream, event) -> None:
        if stream is not None and event is not None:
            stream.wait_event(event)

    @staticmethod
    def keep_alive(tensor: torch.Tensor, stream) -> None:
        # a tensor made on one stream and used on another must not be recycled by the allocator early
        if stream is not None and tensor.is_cuda:
            tensor.record_stream(stream)


class PinnedRing:
    """Reusable pinned host buffers for host->device copies; a slot is reused only after its copy ended."""

    def __init__(self, slots: int, pinned: bool):
        self._buffers: list[torch.Tensor | None] = [None] * slots
        self._events: list[Any] = [None] * slots
        self._next = itertools.cycle(range(slots))
        self._pinned = pinned

    def stage(self, array: np.ndarray) -> tuple[int, torch.Tensor]:
        slot = next(self._next)
        if self._events[slot] is not None:
            self._events[slot].synchronize()
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < array.size:
            buffer = torch.empty(array.size, dtype=torch.uint8, pin_memory=self._pinned)
            self._buffers[slot] = buffer
        view = buffer[:array.size].view(array.shape)
        np.copyto(view.numpy(), array)   # also packs a padded (strided) image into dense rows
        return slot, view

    def copied(self, slot: int, event: Any) -> None:
        self._events[slot] = event


@dataclass
class Frame:
    seq: int
    image: np.ndarray
    encoding: str
    tag: Any
    t_in: float
    keep_image: bool


@dataclass
class Prepared:
    frame: Frame
    tensor: torch.Tensor
    geometry: Geometry
    ready: Any
    timings_ms: dict[str, float]


@dataclass
class Inferred:
    prepared: Prepared
    outputs: dict[str, Any]
    done: dict[str, Any]


class LatestSlot:
    """Input of the pipeline: holds at most ``capacity`` frames; putting into a full slot evicts the oldest."""

    def __init__(self, capacity: int):
        self._items: deque[Frame] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()

    def put(self, frame: Any, block: bool = False, timeout: float = 0.1) -> Any | None:
        """Add ``frame``; when full either evict the oldest (returned) or, with ``block``, wait up to
        ``timeout`` for room and return ``frame`` itself if there was none."""
        with self._cond:
            if block and len(self._items) >= self._capacity:
                self._cond.wait_for(lambda: len(self._items) < self._capacity, timeout)
                if len(self._items) >= self._capacity:
                    return frame
            evicted = self._items.popleft() if len(self._items) >= self._capacity else None
            self._items.append(frame)
            self._cond.notify_all()
            return evicted

    def get(self, timeout: float) -> Any | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        return len(self._items)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _finite(tensor: torch.Tensor) -> bool:
    # one float32 sum is NaN/inf iff some element is (barring sums beyond 3e38): cheaper than isfinite().all()
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) if tensor.is_floating_point() else True


class Engine:
    """Runs the instance and/or semantic model on frames; ``process`` (synchronous) or ``start/submit`` (pipelined)."""

    def __init__(self, config: EngineConfig, instance: LoadedModel | None = None,
                 semantic: LoadedModel | None = None, stats: PipelineStats | None = None,
                 on_result: Callable[[FrameResult], None] | None = None,
                 on_error: Callable[[FrameResult], None] | None = None):
        if instance is None and semantic is None:
            raise ValueError("the engine needs at least one model (instance and/or semantic).")
        self.config = config
        self.device = check_device(config.device)
        self.dtype = PRECISIONS[config.precision]
        self.models = {m.task: m for m in (instance, semantic) if m is not None}
        for model in self.models.values():
            model.module.to(self.device, self.dtype).eval()
            if config.channels_last:
                model.module.to(memory_format=torch.channels_last)
        self.warnings: list[str] = []
        if config.joint:
            if len(self.models) < 2:
                raise ValueError("joint mode needs both an instance and a semantic model; set joint to false.")
            self.warnings += share_backbone(self.models["instance"].module, self.models["semantic"].module)
        self.device_path = config.device_path if config.device_path is not None else self.device.type == "cuda"
        self.streams = StreamSet(self.device, timing=config.record_stream_times)
        self.pinned = PinnedRing(slots=config.stage_queue + 3, pinned=self.device.type == "cuda")
        self.class_filter = (torch.tensor(config.class_filter, dtype=torch.long, device=self.device)
                             if config.class_filter else None)
        self.stats = stats or PipelineStats()
        self.on_result = on_result
        self.on_error = on_error
        self._postprocess_instances = None
        if "instance" in self.models:
            from ros_amf.modeling.sparseinst.postprocess import postprocess_instances
            self._postprocess_instances = postprocess_instances
        self._seq = itertools.count()
        self._slot = LatestSlot(config.input_slots)
        self._q_infer = LatestSlot(config.stage_queue)
        self.inference_workers = config.inference_workers or (
            1 if self.device.type == "cuda" else max(1, min(4, os.cpu_count() or 1)))
        if self.inference_workers > 1 and self.device.type == "cpu":
            # process-wide in torch: each worker gets its share of the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.inference_workers))
        # reorder buffer between inference and post-processing: ticket -> Inferred (or the failure)
        self._tickets_taken = 0
        self._next_ticket = 0
        self._done: dict[int, Any] = {}
        self._take_lock = threading.Lock()
        self._reorder = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self.stream_intervals: deque[tuple[str, float, float]] = deque(maxlen=4096)
        self._t0_event = None

    # ----- stages (also usable one by one, e.g. by the naive benchmark node) -----
    def preprocess(self, frame: Frame) -> Prepared:
        start = time.perf_counter()
        size = self.config.input_size
        if not self.device_path:
            tensor, geometry = preprocess_numpy(frame.image, frame.encoding, size)
            tensor = tensor.to(self.device, self.dtype)
            if self.config.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            ready = None
        else:
            slot, host = self.pinned.stage(frame.image)
            stream = self.streams.copy
            with self.streams.use(stream):
                begin = self.streams.record(stream)
                device_image = host.to(self.device, non_blocking=True)
                self.pinned.copied(slot, self.streams.record(stream))
                tensor, geometry = preprocess_torch(device_image, frame.encoding, size, self.dtype,
                                                    self.config.channels_last)
                ready = self.streams.record(stream)
            self._interval("copy+preprocess", begin, ready)
        return Prepared(frame, tensor, geometry, ready, {"preprocess": _ms(start)})

    def infer(self, prepared: Prepared) -> Inferred:
        # On CUDA this only queues the kernels (the models' streams run side by side); the host-side
        # "inference" time is then launch time, the GPU time per stream comes from the timing events.
        start = time.perf_counter()
        outputs, done = {}, {}
        order = ["instance", "semantic"] if self.config.joint else list(self.models)
        with torch.inference_mode():
            for task in order:
                if task not in self.models:
                    continue
                stream = self.streams.compute["instance" if self.config.joint else task]
                with self.streams.use(stream):
                    self.streams.wait(stream, prepared.ready)
                    self.streams.keep_alive(prepared.tensor, stream)
                    begin = self.streams.record(stream)
                    result = self.models[task].module(prepared.tensor)
                    outputs[task] = result
                    done[task] = self.streams.record(stream)
                    self._interval(f"inference/{task}", begin, done[task])
        prepared.timings_ms["inference"] = _ms(start)
        return Inferred(prepared, outputs, done)

    def postprocess(self, inferred: Inferred) -> FrameResult:
        start = time.perf_counter()
        prepared = inferred.prepared
        frame, geometry = prepared.frame, prepared.geometry
        result = FrameResult(seq=frame.seq, tag=frame.tag, geometry=geometry, t_in=frame.t_in,
                             timings_ms=prepared.timings_ms)
        stream = self.streams.post
        with torch.inference_mode(), self.streams.use(stream):
            begin = None
            for task, event in inferred.done.items():
                self.streams.wait(stream, event)
            if stream is not None:   # outputs were allocated on the compute streams
                for output in inferred.outputs.values():
                    for tensor in (output.values() if isinstance(output, dict) else [output]):
                        if torch.is_tensor(tensor):
                            self.streams.keep_alive(tensor, stream)
            if stream is not None:
                begin = self.streams.record(stream)
            host: dict[str, torch.Tensor] = {}
            if "instance" in inferred.outputs:
                host.update(self._instance_on_device(inferred.outputs["instance"], geometry))
            if "semantic" in inferred.outputs:
                logits = inferred.outputs["semantic"]
                logits = logits["logits"] if isinstance(logits, dict) else logits
                if not _finite(logits):
                    raise NonFiniteOutput("semantic model output holds NaN/inf")
                host["labels"] = semantic_labels(logits, geometry)
            # device->host: non-blocking copies issued on the post stream, then one wait for all of them
            host = {k: (v.to("cpu", non_blocking=True) if v.is_cuda else v) for k, v in host.items()}
            end = self.streams.record(stream)
            if end is not None:
                end.synchronize()
            self._interval("postprocess", begin, end)
        if "ids" in host:
            count = host["classes"].numel()
            result.instances = InstanceOutput(
                ids=host["ids"].numpy().astype(id_map_dtype(count), copy=False),
                classes=host["classes"].numpy().astype(np.int64, copy=False),
                scores=host["scores"].float().numpy(), boxes=host["boxes"].numpy(),
                areas=host["areas"].numpy().astype(np.int64, copy=False),
                masks=host["masks"].numpy() if "masks" in host else None)
        if "labels" in host:
            result.semantic = SemanticOutput(labels=host["labels"].numpy())
        if frame.keep_image:
            result.image_rgb = to_rgb(frame.image if frame.image.ndim == 3 else frame.image[..., None],
                                      frame.encoding)
        result.timings_ms["postprocess"] = _ms(start)
        return result

    def _instance_on_device(self, outputs: dict[str, torch.Tensor], geometry: Geometry) -> dict[str, torch.Tensor]:
        for key in ("pred_logits", "pred_masks", "pred_scores"):
            if not isinstance(outputs, dict) or key not in outputs:
                raise BadModelOutput(f"instance model output lacks '{key}'")
            if not _finite(outputs[key]):
                raise NonFiniteOutput(f"instance model output '{key}' holds NaN/inf")
        cfg = self.config
        outputs = prescreen_queries({k: v.float() for k, v in outputs.items() if torch.is_tensor(v)},
                                    cfg.score_threshold, cfg.mask_threshold)
        found = self._postprocess_instances(
            outputs,
            image_size_hw=geometry.resized_hw, output_size_hw=geometry.original_hw,
            score_threshold=cfg.score_threshold, mask_threshold=cfg.mask_threshold,
            max_instances=cfg.max_instances)[0]
        # the threshold applies twice: before mask rescoring (cheap, inside postprocess_instances) and on the
        # final score that is published
        ids, classes, scores, boxes, areas, masks = instance_tensors(found.masks, found.scores, found.classes,
                                                                     self.class_filter, cfg.score_threshold)
        out = {"ids": ids, "classes": classes, "scores": scores, "boxes": boxes, "areas": areas}
        if cfg.keep_masks:
            out["masks"] = masks
        return out

    def _interval(self, name: str, begin, end) -> None:
        # GPU only: remember when each stream was busy (relative to the first event) to measure overlap
        if not self.streams.timing or begin is None or end is None:
            return
        if self._t0_event is None:
            self._t0_event = begin
        self.stream_intervals.append((name, begin, end))

    def stream_busy_ms(self) -> list[tuple[str, float, float]]:
        """Resolved (name, start_ms, end_ms) of recorded GPU intervals; call after the work finished."""
        if self._t0_event is None:
            return []
        torch.cuda.synchronize(self.device)
        t0 = self._t0_event
        return [(name, t0.elapsed_time(b), t0.elapsed_time(e)) for name, b, e in list(self.stream_intervals)]

    def warm_up(self, height: int, width: int) -> str | None:
        """One throw-away frame through every stage: the first forward allocates and tunes, and would
        otherwise show up as a latency spike on the first camera frame. Not counted in the stats.
        Returns the failure message if the frame failed (the caller decides whether to warn)."""
        frame = self.make_frame(np.zeros((height, width, 3), np.uint8), "rgb8")
        try:
            self.postprocess(self.infer(self.preprocess(frame)))
        except Exception as exc:  # a bad model output on a black frame is reported, not fatal
            return f"{type(exc).__name__}: {exc}"
        return None

    # ----- synchronous use -----
    def make_frame(self, image: np.ndarray, encoding: str, tag: Any = None, keep_image: bool = False) -> Frame:
        return Frame(next(self._seq), image, encoding, tag, time.perf_counter(), keep_image)

    def process(self, image: np.ndarray, encoding: str, tag: Any = None, keep_image: bool = False) -> FrameResult:
        """All stages in the caller's thread; failures come back as a result with ``error`` set."""
        self.stats.frame_in()
        frame = self.make_frame(image, encoding, tag, keep_image)
        stage = "preprocess"
        try:
            prepared = self.preprocess(frame)
            stage = "inference"
            inferred = self.infer(prepared)
            stage = "postprocess"
            result = self.postprocess(inferred)
        except Exception as exc:  # counted per cause; the caller keeps running
            return self._failed(frame, exc, stage)
        self._deliver(result)
        return result

    # ----- pipelined use -----
    def start(self) -> None:
        if self._threads:
            return
        self._running.set()
        stages = [("preprocess", self._run_preprocess), ("postprocess", self._run_postprocess)]
        stages += [(f"inference{i}", self._run_inference) for i in range(self.inference_workers)]
        for name, target in stages:
            thread = threading.Thread(target=target, name=f"ros_amf-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, image: np.ndarray, encoding: str, tag: Any = None, keep_image: bool = False) -> int:
        """Hand a frame to the pipeline (never blocks); returns its sequence number."""
        self.stats.frame_in()
        frame = self.make_frame(image, encoding, tag, keep_image)
        with self._idle:
            self._pending += 1
        if self.config.lossless:
            while self._slot.put(frame, block=True) is frame:
                if not self._running.is_set():
                    raise RuntimeError("submit() on a stopped engine; call start() first.")
            return frame.seq
        self._drop(self._slot.put(frame))
        return frame.seq

    def _drop(self, evicted: Any) -> None:
        if evicted is not None:
            self.stats.dropped()
            self._finish_one()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted frame is published, dropped or failed."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        """Stop the stage threads; frames still waiting inside are counted as dropped (never lost silently)."""
        self._running.clear()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()
        with self._idle:
            abandoned, self._pending = self._pending, 0
            self._idle.notify_all()
        self._slot = LatestSlot(self.config.input_slots)
        self._q_infer = LatestSlot(self.config.stage_queue)
        with self._reorder:
            self._done.clear()
            self._next_ticket = self._tickets_taken
        if abandoned > 0:
            self.stats.dropped(abandoned)

    @property
    def in_flight(self) -> int:
        return self._pending

    def _finish_one(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _run_preprocess(self) -> None:
        while self._running.is_set():
            frame = self._slot.get(timeout=0.1)
            if frame is None:
                continue
            try:
                prepared = self.preprocess(frame)
            except Exception as exc:
                self._failed(frame, exc, stage="preprocess")
                self._finish_one()
                continue
            if self.config.lossless:
                while self._q_infer.put(prepared, block=True) is prepared:
                    if not self._running.is_set():
                        self._finish_one()
                        break
            else:
                self._drop(self._q_infer.put(prepared))   # a fresher frame replaces a waiting one

    def _run_inference(self) -> None:
        limit = self.inference_workers + self.config.stage_queue   # frames between take and post
        while self._running.is_set():
            with self._reorder:
                if self._tickets_taken - self._next_ticket >= limit:
                    self._reorder.wait(0.1)
                    continue
            with self._take_lock:   # tickets follow queue order
                prepared = self._q_infer.get(timeout=0.1)
                if prepared is None:
                    continue
                ticket = self._tickets_taken
                self._tickets_taken += 1
            try:
                item: Any = self.infer(prepared)
            except Exception as exc:
                item = (prepared.frame, exc)
            with self._reorder:
                self._done[ticket] = item
                self._reorder.notify_all()

    def _run_postprocess(self) -> None:
        while self._running.is_set():
            with self._reorder:
                if self._next_ticket not in self._done:
                    self._reorder.wait(0.1)
                    continue
                item = self._done.pop(self._next_ticket)
                self._next_ticket += 1
                self._reorder.notify_all()
            if isinstance(item, tuple):
                self._failed(item[0], item[1], stage="inference")
            else:
                try:
                    result = self.postprocess(item)
                except Exception as exc:
                    self._failed(item.prepared.frame, exc, stage="postprocess")
                else:
                    self._deliver(result)
            self._finish_one()

    def _deliver(self, result: FrameResult) -> None:
        start = time.perf_counter()
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception as exc:  # a failing consumer is counted like any other stage failure
                self._failed_result(result, f"publish: {type(exc).__name__}: {exc}", "publish_error")
                return
        result.timings_ms["publish"] = _ms(start)
        result.timings_ms["end_to_end"] = (time.perf_counter() - result.t_in) * 1000.0
        self.stats.frame_out(result.timings_ms)

    def _failed(self, frame: Frame, exc: Exception, stage: str = "pipeline") -> FrameResult:
        reason = ("non_finite_output" if isinstance(exc, NonFiniteOutput) else
                  "bad_model_output" if isinstance(exc, BadModelOutput) else f"{stage}_error")
        result = FrameResult(seq=frame.seq, tag=frame.tag, geometry=Geometry(frame.image.shape[:2],
                             frame.image.shape[:2], frame.image.shape[:2]), t_in=frame.t_in)
        return self._failed_result(result, f"{type(exc).__name__}: {exc}", reason)

    def _failed_result(self, result: FrameResult, message: str, reason: str) -> FrameResult:
        result.error = message
        self.stats.fail(reason)
        if self.on_error is not None:
            try:
                self.on_error(result)
            except Exception:
                pass  # the failure is already counted; a broken error logger must not stop the pipeline
        return result
