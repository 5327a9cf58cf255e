"""The inference engine: the stages of ``stages.py`` scheduled on threads (and CUDA streams).

One engine serves the ROS nodes, the bag replay and the offline evaluator, so what is measured
offline is what runs on the vehicle.

* CPU path: one thread per stage joined by bounded queues; torch and OpenCV release the GIL, so frame
  N+1 is pre-processed while N runs the model and N-1 is post-processed. Inference may use several
  worker threads (``inference_workers``; auto = one per core, one torch thread each): consecutive
  frames then run the model side by side, which on a CPU beats one frame spread over all cores
  (intra-op threads scale poorly on small inputs and collapse when the cores are shared). A reorder
  buffer keeps the outputs in frame order.
* GPU path: the same three threads, each issuing its work on its own CUDA stream (see ``cuda.py``).
  The instance and semantic models run on two compute streams in parallel, or share one backbone
  forward in "joint" mode.
* Overload ("latest-frame" policy, the default for live cameras): the input and the hand-over to
  inference are latest-frame slots; a new frame replaces a waiting one and the replaced frame is
  counted as dropped, so the model always gets the freshest frame and latency stays near one
  inference. The hand-over to post-processing blocks. Nothing grows without bound.
  ``lossless=True`` (offline evaluation, benchmarks of every frame) makes ``submit`` wait for room
  instead, and no frame is dropped.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ros_amf.runtime.loading import LoadedModel
from ros_amf.runtime.outputs import BadModelOutput, FrameResult, NonFiniteOutput, OutputsClosed, check_output_scale
from ros_amf.runtime.stages import CameraFrame, FrameSettings, FrameStages, elapsed_ms
from ros_amf.runtime.stats import InFlight, PipelineCounters

__all__ = ["Engine", "EngineConfig", "LatestSlot"]


@dataclass
class EngineConfig(FrameSettings):
    """Per-frame settings (``FrameSettings``) plus how frames are queued and scheduled."""
    input_slots: int = 1             # frames that may wait at the input before the oldest is dropped
    stage_queue: int = 1             # frames that may wait between two stages
    lossless: bool = False           # True: submit() waits for room instead of dropping (offline use)
    inference_workers: int = 0       # 0 = auto: one per CPU core on CPU (torch threads 1 each), 1 on CUDA

    def __post_init__(self) -> None:
        super().__post_init__()
        check_output_scale(self.output_scale)
        if self.input_slots < 1 or self.stage_queue < 1:
            raise ValueError("input_slots and stage_queue must be at least 1.")


class LatestSlot:
    """Input of the pipeline: holds at most ``capacity`` frames; putting into a full slot evicts the oldest."""

    def __init__(self, capacity: int):
        self._items: deque[Any] = deque()
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


class StageThreads:
    """An engine's stage threads and the flag they run under (``running``): started once, stopped together."""

    def __init__(self, prefix: str, join_timeout_s: float = 5.0):
        self.prefix, self.join_timeout_s = prefix, join_timeout_s
        self.running = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, workers: list[tuple[str, Callable[[], None]]],
              discard_stale: Callable[[], None] | None = None) -> None:
        """``discard_stale`` empties the queues between stages when threads outlived the last stop: what they
        handed on after it was already counted as dropped there, and must not be published now."""
        if self.running.is_set():
            return
        stragglers = bool(self._threads)
        for thread in self._threads:   # outlived the last stop (a long stage call, e.g. a compile): they leave
            thread.join()              # their loops first, or they would run beside the new threads
        self._threads.clear()
        if stragglers and discard_stale is not None:
            discard_stale()
        self.running.set()
        for name, target in workers:
            thread = threading.Thread(target=target, name=f"{self.prefix}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Clear the flag and wait (a few seconds at most each) for the threads to leave their loops."""
        self.running.clear()
        for thread in self._threads:
            thread.join(timeout=self.join_timeout_s)
        self._threads = [t for t in self._threads if t.is_alive()]   # still in a stage call: start() waits


class Engine:
    """Runs the instance and/or semantic model on frames; ``process`` (synchronous) or ``start/submit`` (pipelined)."""

    def __init__(self, config: EngineConfig, instance: LoadedModel | None = None,
                 semantic: LoadedModel | None = None, stats: PipelineCounters | None = None,
                 on_result: Callable[[FrameResult], None] | None = None,
                 on_error: Callable[[FrameResult], None] | None = None):
        self.config = config
        # pinned staging buffers: one per frame that can be between its copy and the end of pre-processing
        self.stages = FrameStages(config, instance, semantic, staging_slots=config.stage_queue + 3)
        stages = self.stages
        self.models, self.device, self.dtype = stages.models, stages.device, stages.dtype
        self.input_sizes, self.device_path, self.streams = stages.input_sizes, stages.device_path, stages.streams
        self.warnings = stages.warnings
        self.stats = stats or PipelineCounters()
        self.on_result = on_result
        self.on_error = on_error
        self._seq = itertools.count()
        self._slot = LatestSlot(config.input_slots)
        self._q_infer = LatestSlot(config.stage_queue)
        self.inference_workers = config.inference_workers or (
            1 if self.device.type == "cuda" else max(1, min(4, os.cpu_count() or 1)))
        if self.inference_workers > 1 and self.device.type == "cpu":
            # process-wide in torch: each worker gets its share of the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.inference_workers))
        # reorder buffer between inference and post-processing: ticket -> InferredFrame (or the failure)
        self._tickets_taken = 0
        self._next_ticket = 0
        self._done: dict[int, Any] = {}
        self._take_lock = threading.Lock()
        self._reorder = threading.Condition()
        self._stage_threads = StageThreads("ros_amf")
        self._running = self._stage_threads.running
        self._in_flight = InFlight()
        # A thread that outlives a stop's join still holds a frame the stop counted as dropped: each frame's
        # fate is counted under _claims, only while the epoch it was taken in is current (see _settle).
        self._epoch = 0
        self._claims = threading.Lock()
        self._settling = 0   # frames whose fate is being counted (a publish under way): a stop leaves them

    def stream_busy_ms(self) -> list[tuple[str, float, float]]:
        """GPU: (name, start_ms, end_ms) of each stage's stream work; call after the work finished."""
        return self.streams.busy_ms()

    def warm_up(self, height: int | None = None, width: int | None = None) -> str | None:
        """One throw-away frame through every stage: the first forward allocates and tunes, and would
        otherwise show up as a latency spike on the first camera frame. Not counted in the stats.
        The frame defaults to the largest input size. Returns the failure message if the frame failed
        (the caller decides whether to warn)."""
        largest = max(self.input_sizes.values(), key=lambda s: (s.short_side, s.max_long_side))
        frame = self.make_frame(np.zeros((height or largest.short_side, width or largest.max_long_side, 3),
                                         np.uint8), "rgb8")
        try:
            self.stages.postprocess(self.stages.infer(self.stages.preprocess(frame)))
        except Exception as exc:  # a bad model output on a black frame is reported, not fatal
            return f"{type(exc).__name__}: {exc}"
        return None

    # ----- synchronous use -----
    def make_frame(self, image: np.ndarray, encoding: str, tag: Any = None, keep_image: bool = False) -> CameraFrame:
        return CameraFrame(next(self._seq), image, encoding, tag, time.perf_counter(), keep_image)

    def process(self, image: np.ndarray, encoding: str, tag: Any = None, keep_image: bool = False) -> FrameResult:
        """All stages in the caller's thread; failures come back as a result with ``error`` set."""
        self.stats.frame_in()
        frame = self.make_frame(image, encoding, tag, keep_image)
        stage = "preprocess"
        try:
            prepared = self.stages.preprocess(frame)
            stage = "inference"
            inferred = self.stages.infer(prepared)
            stage = "postprocess"
            result = self.stages.postprocess(inferred)
        except Exception as exc:  # counted per cause; the caller keeps running
            return self._failed(frame, exc, stage)
        self._deliver(result)
        return result

    # ----- pipelined use -----
    def start(self) -> None:
        workers = [("preprocess", self._run_preprocess), ("postprocess", self._run_postprocess)]
        workers += [(f"inference{i}", self._run_inference) for i in range(self.inference_workers)]
        self._stage_threads.start(workers, discard_stale=self._discard_stale)

    def _discard_stale(self) -> None:
        self._q_infer = LatestSlot(self.config.stage_queue)
        with self._reorder:
            self._done.clear()
            self._next_ticket = self._tickets_taken

    def submit(self, image: np.ndarray, encoding: str, tag: Any = None, keep_image: bool = False) -> int:
        """Hand a frame to the pipeline (never blocks); returns its sequence number."""
        self.stats.frame_in()
        frame = self.make_frame(image, encoding, tag, keep_image)
        if self.config.lossless:
            self._in_flight.add()    # a stop while this waits counts the frame as dropped
            while self._slot.put(frame, block=True) is frame:
                if not self._running.is_set():
                    raise RuntimeError("submit() on a stopped engine; call start() first.")
            return frame.seq
        with self._claims:           # one side of a concurrent stop(): counted by it, or put in after it
            epoch = self._epoch
            self._in_flight.add()
            evicted = self._slot.put(frame)
        self._drop(evicted, epoch)
        return frame.seq

    def _drop(self, evicted: Any, epoch: int) -> None:
        if evicted is not None:
            self._settle(epoch, self.stats.dropped)

    def _settle(self, epoch: int, count_fate: Callable[[], Any]) -> None:
        """Count one frame's fate (``count_fate``: publish, drop or fail it) and let it go, unless a stop since
        ``epoch`` (when the frame was taken) has counted it as dropped already."""
        with self._claims:
            if epoch != self._epoch:
                return
            self._settling += 1
        try:
            count_fate()
        finally:
            with self._claims:
                self._settling -= 1
                self._in_flight.done()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted frame is published, dropped or failed."""
        return self._in_flight.wait_idle(timeout)

    def stop(self) -> None:
        """Stop the stage threads; frames still waiting inside are counted as dropped (never lost silently)."""
        self._stage_threads.stop()
        # all at once (lock order: _reorder, then _claims): a thread that outlived the join either settled its
        # frame before this, or finds the new epoch and counts nothing of what the stop counts here
        with self._reorder, self._claims:
            self._epoch += 1
            abandoned = self._in_flight.clear(keep=self._settling)
            self._slot = LatestSlot(self.config.input_slots)
            self._q_infer = LatestSlot(self.config.stage_queue)
            self._done.clear()
            self._next_ticket = self._tickets_taken
        if abandoned > 0:
            self.stats.dropped(abandoned)

    @property
    def in_flight(self) -> int:
        return self._in_flight.count

    def _run_preprocess(self) -> None:
        while self._running.is_set():
            epoch = self._epoch
            frame = self._slot.get(timeout=0.1)
            if frame is None:
                continue
            try:
                prepared = self.stages.preprocess(frame)
            except Exception as exc:
                self._settle(epoch, lambda: self._failed(frame, exc, stage="preprocess"))
                continue
            if self.config.lossless:
                while self._q_infer.put(prepared, block=True) is prepared:
                    if not self._running.is_set():   # stopped while waiting: counted as dropped, not lost
                        self._drop(prepared, epoch)
                        break
            else:
                self._drop(self._q_infer.put(prepared), epoch)   # a fresher frame replaces a waiting one

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
                item: Any = self.stages.infer(prepared)
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
                epoch = self._epoch
                item = self._done.pop(self._next_ticket)
                self._next_ticket += 1
                self._reorder.notify_all()
            if isinstance(item, tuple):
                self._settle(epoch, lambda: self._failed(item[0], item[1], stage="inference"))
                continue
            try:
                result = self.stages.postprocess(item)
            except Exception as exc:
                self._settle(epoch, lambda: self._failed(item.prepared.frame, exc, stage="postprocess"))
            else:
                self._settle(epoch, lambda: self._deliver(result))

    def _deliver(self, result: FrameResult) -> None:
        start = time.perf_counter()
        if self.on_result is not None:
            try:
                self.on_result(result)
            except OutputsClosed:   # finished while the consumer closed its outputs: not published
                self.stats.dropped()
                return
            except Exception as exc:  # a failing consumer is counted like any other stage failure
                self._failed_result(result, f"publish: {type(exc).__name__}: {exc}", "publish_error")
                return
        result.timings_ms["publish"] = elapsed_ms(start)
        result.timings_ms["end_to_end"] = (time.perf_counter() - result.t_in) * 1000.0
        self.stats.frame_out(result.timings_ms)

    def _failed(self, frame: CameraFrame, exc: Exception, stage: str = "pipeline") -> FrameResult:
        reason = ("non_finite_output" if isinstance(exc, NonFiniteOutput) else
                  "bad_model_output" if isinstance(exc, BadModelOutput) else f"{stage}_error")
        result = FrameResult(seq=frame.seq, tag=frame.tag, t_in=frame.t_in)
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
