"""One model copy serving several cameras: the latest frame of each camera batched into one forward.

``BatchedEngine`` is ``pipeline.Engine`` for N cameras. Each camera has its own latest-frame slot and
its own counters (frames in / out / dropped / rejected / failed, latency), so a camera that floods
the node cannot hide another's drops. Three threads, as in the single-camera engine:

* gather: waits until some camera has a frame, takes the latest frame of every camera that has one
  and pre-processes each (the frames of one batch may differ in size);
* inference: frames whose network inputs have the same shape are stacked and run through the model
  in ONE forward (batch dimension = cameras with a frame ready); the outputs are split per frame;
* post-processing: each frame through the same ``FrameStages.postprocess`` as a single camera, then
  handed to ``on_result(camera, result)``.

The hand-overs between the threads hold one batch and block, so while a batch runs the model the
cameras' slots keep only their freshest frame: a replaced frame is counted as dropped on its camera.
A forward run by an ONNX Runtime / OpenVINO graph (``backends.BackendForward``, exported for one image
per call) gets the frames one by one inside the batch's turn; torch forwards take the whole batch.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch

from ros_amf.runtime.backends import BackendForward
from ros_amf.runtime.outputs import BadModelOutput, FrameResult, NonFiniteOutput, OutputsClosed
from ros_amf.runtime.pipeline import EngineConfig, LatestSlot, StageThreads
from ros_amf.runtime.stages import CameraFrame, FrameStages, InferredFrame, PreparedFrame, elapsed_ms
from ros_amf.runtime.stats import InFlight, PipelineCounters

__all__ = ["BatchedEngine", "split_batch", "infer_batch"]


def split_batch(output: Any, index: int, size: int) -> Any:
    """Item ``index`` of a batched model output (dicts, tuples and lists of [B, ...] tensors), keeping
    its batch dimension of 1. Values that are not batched tensors (training-only extras) are left out."""
    if torch.is_tensor(output):
        return output[index:index + 1] if output.ndim and output.shape[0] == size else None
    if isinstance(output, dict):
        items = {key: split_batch(value, index, size) for key, value in output.items()}
        return {key: value for key, value in items.items() if value is not None}
    if isinstance(output, (tuple, list)):
        return type(output)(split_batch(value, index, size) for value in output)
    return None


def _forward(module: torch.nn.Module, batch: torch.Tensor) -> list[Any]:
    """The model's output for each image of ``batch``."""
    size = batch.shape[0]
    if isinstance(module, BackendForward):
        if module.fallback_reason is None:   # the exported graphs take one image per call
            return [module(batch[i:i + 1]) for i in range(size)]
        module = module.torch_module         # fell back to torch for good: the batch runs at once
    output = module(batch)
    return [output] if size == 1 else [split_batch(output, i, size) for i in range(size)]


def infer_batch(stages: FrameStages, prepared: list[PreparedFrame]) -> list[InferredFrame | Exception]:
    """Run every model of ``stages`` once per group of equally shaped inputs; one result (or the exception
    that failed its group) per frame, in order."""
    start = time.perf_counter()
    outputs: list[dict[str, Any]] = [{} for _ in prepared]
    done: list[dict[str, Any]] = [{} for _ in prepared]
    failed: dict[int, Exception] = {}
    with torch.inference_mode():
        for tasks, module in stages.runs:
            groups: dict[tuple, list[int]] = defaultdict(list)
            for i, frame in enumerate(prepared):
                if i not in failed:
                    groups[tuple(frame.inputs[tasks[0]].tensor.shape)].append(i)
            stream = stages.streams.compute[tasks[0]]
            for members in groups.values():
                try:
                    with stages.streams.use(stream):
                        for i in members:
                            stages.streams.wait(stream, prepared[i].ready)
                        tensors = [prepared[i].inputs[tasks[0]].tensor for i in members]
                        batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
                        if stages.settings.channels_last:
                            batch = batch.contiguous(memory_format=torch.channels_last)
                        stages.streams.keep_alive(batch, stream)
                        per_frame = _forward(module, batch)
                        finished = stages.streams.record(stream)
                except Exception as exc:  # the whole group failed; each of its frames is counted
                    failed.update({i: exc for i in members})
                    continue
                for i, output in zip(members, per_frame):
                    for task, part in zip(tasks, output if len(tasks) > 1 else [output]):
                        outputs[i][task], done[i][task] = part, finished
    took = elapsed_ms(start)
    results: list[InferredFrame | Exception] = []
    for i, frame in enumerate(prepared):
        frame.timings_ms["inference"] = took    # a frame waits for its whole batch
        results.append(failed[i] if i in failed else InferredFrame(frame, outputs[i], done[i]))
    return results


class BatchedEngine:
    """The models once, N cameras: ``submit(camera, ...)`` per frame; results come to ``on_result(camera, r)``."""

    def __init__(self, config: EngineConfig, cameras: list[str], instance=None, semantic=None,
                 stats: dict[str, PipelineCounters] | None = None,
                 on_result: Callable[[str, FrameResult], None] | None = None,
                 on_error: Callable[[str, FrameResult], None] | None = None):
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras {list(cameras)} must name at least one camera, each once.")
        self.config = config
        self.cameras = list(cameras)
        # pinned staging buffers (CUDA): a batch being gathered, one waiting and one in the model
        self.stages = FrameStages(config, instance, semantic, staging_slots=3 * len(cameras) + 1)
        stages = self.stages
        self.models, self.device, self.input_sizes = stages.models, stages.device, stages.input_sizes
        self.warnings = stages.warnings
        self.stats = {name: (stats or {}).get(name) or PipelineCounters() for name in self.cameras}
        self.on_result, self.on_error = on_result, on_error
        self.batches = 0               # forwards run, and the frames they carried: mean batch size
        self.batched_frames = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._slots = {name: LatestSlot(config.input_slots) for name in self.cameras}
        self._q_infer = LatestSlot(1)
        self._q_post = LatestSlot(1)
        self._stage_threads = StageThreads("ros_amf-batched")
        self._running = self._stage_threads.running
        self._in_flight = InFlight()
        # Every frame the engine holds, seq -> camera. A frame's fate (published, dropped, failed) is counted by
        # whoever takes it out of here first (_settle): a thread that outlives a stop's join finds its frames
        # already counted as dropped by the stop, and neither publishes nor counts them again.
        self._held: dict[int, str] = {}
        self._claims = threading.Lock()
        self._settling = 0   # frames whose fate is being counted (a publish under way): a stop leaves them

    def warm_up(self, height: int | None = None, width: int | None = None) -> str | None:
        """One throw-away batch (a black frame per camera) through every stage, not counted: the first
        forward of a batch size allocates and tunes. Returns the failure message if it failed."""
        largest = max(self.input_sizes.values(), key=lambda s: (s.short_side, s.max_long_side))
        image = np.zeros((height or largest.short_side, width or largest.max_long_side, 3), np.uint8)
        try:
            prepared = [self.stages.preprocess(CameraFrame(0, image, "rgb8", None, time.perf_counter(), False))
                        for _ in self.cameras]
            for item in infer_batch(self.stages, prepared):
                if isinstance(item, Exception):
                    raise item
                self.stages.postprocess(item)
        except Exception as exc:  # a bad model output on a black frame is reported, not fatal
            return f"{type(exc).__name__}: {exc}"
        return None

    # ----- input -----
    def _admit(self, camera: str, image, encoding: str, tag: Any, keep_image: bool) -> CameraFrame:
        """Count ``camera``'s frame in and hold it until its fate is counted (``_settle``)."""
        self.stats[camera].frame_in()
        with self._claims:
            self._seq += 1
            frame = CameraFrame(self._seq, image, encoding, tag, time.perf_counter(), keep_image)
            self._held[frame.seq] = camera
            self._in_flight.add()
        return frame

    def _settle(self, seq: int, count_fate: Callable[[str], Any]) -> None:
        """Count frame ``seq``'s fate (``count_fate(camera)``: publish, drop or fail it) and let it go, unless a
        stop has counted it as dropped already."""
        with self._claims:
            camera = self._held.pop(seq, None)
            if camera is None:
                return
            self._settling += 1
        try:
            count_fate(camera)
        finally:
            with self._claims:
                self._settling -= 1
                self._in_flight.done()

    def _camera(self, camera: str) -> str:
        if camera not in self._slots:
            raise KeyError(f"camera '{camera}' is not one of this engine's cameras {self.cameras}.")
        return camera

    def submit(self, camera: str, image, encoding: str, tag: Any = None, keep_image: bool = False) -> int:
        """Hand ``camera``'s frame over; a frame of that camera still waiting is replaced and counted as
        dropped (with ``lossless``, waits for room instead)."""
        slot = self._slots[self._camera(camera)]
        frame = self._admit(camera, image, encoding, tag, keep_image)
        item = (camera, frame)
        if self.config.lossless:
            while slot.put(item, block=True) is item:
                if not self._running.is_set():
                    self._settle(frame.seq, lambda cam: self.stats[cam].dropped())
                    raise RuntimeError("submit() on a stopped engine; call start() first.")
        else:
            evicted = slot.put(item)
            if evicted is not None:
                self._settle(evicted[1].seq, lambda cam: self.stats[cam].dropped())
        with self._arrived:
            self._arrived.notify_all()
        return frame.seq

    def _take_ready(self) -> list[tuple[str, CameraFrame]]:
        """The latest waiting frame of every camera that has one (empty if none came within 0.1 s)."""
        with self._arrived:
            if not any(len(slot) for slot in self._slots.values()):
                self._arrived.wait(0.1)
        taken = []
        for name, slot in self._slots.items():
            item = slot.get(timeout=0.0) if len(slot) else None
            if item is not None:
                taken.append(item)
        return taken

    # ----- synchronous use (tests, benchmarks) -----
    def process_batch(self, frames: list[tuple[str, Any, str]], tags: list[Any] | None = None,
                      keep_image: bool = False) -> list[FrameResult]:
        """(camera, image, encoding) per frame, all in the caller's thread as one batch."""
        items = [(camera, self._admit(self._camera(camera), image, encoding, tags[k] if tags else None, keep_image))
                 for k, (camera, image, encoding) in enumerate(frames)]
        prepared = self._preprocess(items)
        return self._postprocess(self._infer(prepared))

    # ----- the stages of one batch -----
    def _preprocess(self, items: list[tuple[str, CameraFrame]]) -> list[tuple[str, PreparedFrame]]:
        prepared = []
        for camera, frame in items:
            try:
                prepared.append((camera, self.stages.preprocess(frame)))
            except Exception as exc:
                self._failed(frame, exc, "preprocess")
        return prepared

    def _infer(self, prepared: list[tuple[str, PreparedFrame]]) -> list[tuple[str, Any]]:
        if not prepared:
            return []
        results = infer_batch(self.stages, [p for _, p in prepared])
        with self._lock:
            self.batches += 1
            self.batched_frames += len(prepared)
        return [(camera, item if isinstance(item, InferredFrame) else (frame.frame, item))
                for (camera, frame), item in zip(prepared, results)]

    def _postprocess(self, inferred: list[tuple[str, Any]]) -> list[FrameResult]:
        out = []
        for _, item in inferred:
            if isinstance(item, tuple):
                out.append(self._failed(item[0], item[1], "inference"))
                continue
            try:
                result = self.stages.postprocess(item)
            except Exception as exc:
                out.append(self._failed(item.prepared.frame, exc, "postprocess"))
                continue
            self._settle(result.seq, lambda cam, r=result: self._deliver(cam, r))
            out.append(result)
        return out

    # ----- pipelined use -----
    def start(self) -> None:
        self._stage_threads.start([("gather", self._run_gather), ("inference", self._run_inference),
                                   ("postprocess", self._run_postprocess)], discard_stale=self._discard_stale)

    def _discard_stale(self) -> None:
        # what threads that outlived the last stop handed on after it: the stop counted those frames already
        self._q_infer, self._q_post = LatestSlot(1), LatestSlot(1)

    def _hand_over(self, queue: LatestSlot, batch: list) -> None:
        while queue.put(batch, block=True) is batch:
            if not self._running.is_set():
                return   # stopped while waiting: the stop counts these frames as dropped

    def _run_gather(self) -> None:
        while self._running.is_set():
            items = self._take_ready()
            if not items:
                continue
            prepared = self._preprocess(items)   # the failed ones are counted there
            if prepared:
                self._hand_over(self._q_infer, prepared)

    def _run_inference(self) -> None:
        while self._running.is_set():
            prepared = self._q_infer.get(timeout=0.1)
            if prepared is not None:
                self._hand_over(self._q_post, self._infer(prepared))

    def _run_postprocess(self) -> None:
        while self._running.is_set():
            inferred = self._q_post.get(timeout=0.1)
            if inferred is not None:
                self._postprocess(inferred)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted frame is published, dropped or failed."""
        return self._in_flight.wait_idle(timeout)

    def stop(self) -> None:
        """Stop the threads; frames still inside (waiting, or in a stage call that outlived the join) are
        counted as dropped on their cameras."""
        self._stage_threads.stop()
        with self._claims:
            abandoned = list(self._held.values())
            self._held.clear()
            self._in_flight.clear(keep=self._settling)
            for slot in self._slots.values():
                while slot.get(timeout=0.0) is not None:
                    pass
            self._q_infer, self._q_post = LatestSlot(1), LatestSlot(1)
        for camera in abandoned:
            self.stats[camera].dropped()

    @property
    def in_flight(self) -> int:
        return self._in_flight.count

    def _deliver(self, camera: str, result: FrameResult) -> None:
        start = time.perf_counter()
        if self.on_result is not None:
            try:
                self.on_result(camera, result)
            except OutputsClosed:   # finished while the consumer closed its outputs: not published
                self.stats[camera].dropped()
                return
            except Exception as exc:  # a failing consumer is counted like any other stage failure
                self._failed_result(camera, result, f"publish: {type(exc).__name__}: {exc}", "publish_error")
                return
        result.timings_ms["publish"] = elapsed_ms(start)
        result.timings_ms["end_to_end"] = (time.perf_counter() - result.t_in) * 1000.0
        self.stats[camera].frame_out(result.timings_ms)

    def _failed(self, frame: CameraFrame, exc: Exception, stage: str) -> FrameResult:
        reason = ("non_finite_output" if isinstance(exc, NonFiniteOutput) else
                  "bad_model_output" if isinstance(exc, BadModelOutput) else f"{stage}_error")
        result = FrameResult(seq=frame.seq, tag=frame.tag, t_in=frame.t_in)
        self._settle(frame.seq, lambda cam: self._failed_result(cam, result, f"{type(exc).__name__}: {exc}", reason))
        return result

    def _failed_result(self, camera: str, result: FrameResult, message: str, reason: str) -> FrameResult:
        result.error = message
        self.stats[camera].fail(reason)
        if self.on_error is not None:
            try:
                self.on_error(camera, result)
            except Exception:
                pass  # already counted; a broken error logger must not stop the pipeline
        return result
