"""CUDA plumbing of the GPU path: streams and events, pinned staging buffers, stream busy times.

On a CPU device every stream and event is ``None`` and every call a no-op, so the stage code that
uses them runs (and is tested) unchanged without CUDA.
"""
from __future__ import annotations

import contextlib
import itertools
from collections import deque
from typing import Any

import numpy as np
import torch


class StreamSet:
    """The streams of the GPU path: host->device copy + pre-processing, one compute stream per task,
    post-processing + device->host. With ``timing`` it also remembers when each stream was busy."""

    def __init__(self, device: torch.device, timing: bool = False):
        self.cuda = device.type == "cuda"
        self.timing = timing and self.cuda
        make = (lambda: torch.cuda.Stream(device)) if self.cuda else (lambda: None)
        self.copy, self.post = make(), make()
        self.compute = {"instance": make(), "semantic": make()}
        self._device = device
        self._intervals: deque[tuple[str, Any, Any]] = deque(maxlen=4096)
        self._t0_event = None

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

    def mark_busy(self, name: str, begin, end) -> None:
        """Remember that a stream ran ``name`` between two recorded events (benchmarks measure overlap)."""
        if not self.timing or begin is None or end is None:
            return
        if self._t0_event is None:
            self._t0_event = begin
        self._intervals.append((name, begin, end))

    def busy_ms(self) -> list[tuple[str, float, float]]:
        """Resolved (name, start_ms, end_ms) of the marked intervals; call after the work finished."""
        if self._t0_event is None:
            return []
        torch.cuda.synchronize(self._device)
        t0 = self._t0_event
        return [(name, t0.elapsed_time(b), t0.elapsed_time(e)) for name, b, e in list(self._intervals)]


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
