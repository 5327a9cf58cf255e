"""Compiled torch forwards, per model: ``none`` (eager), ``inductor`` (torch.compile) or ``cudagraphs``.

``inductor`` runs the model through ``torch.compile`` (Inductor writes fused C++/OpenMP kernels on a
CPU, Triton kernels on a GPU); it compiles on the first frame of each input shape, which the engine's
warm-up pays. ``cudagraphs`` captures the forward once per input shape as a CUDA graph and replays it,
so a frame costs one graph launch instead of hundreds of kernel launches (issue 18: the models are
launch-bound on a fast GPU). Capture needs CUDA: on a CPU the model runs eager and a warning says so.

Both stand in for the model module (same input tensor, same outputs) and fall back to the eager
forward for good, with one warning, when compiling or capturing fails. The graph's outputs live in
its own static buffers, so each replay's outputs are cloned before the next frame can overwrite them,
and replays of one graph from several inference workers (each on its own stream) are ordered by an
event: the next frame's input copy waits until the previous replay has been read out.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

COMPILE_MODES = ("none", "inductor", "cudagraphs")
TASKS = ("instance", "semantic")

log = logging.getLogger(__name__)


def check_compile_modes(modes: dict[str, str]) -> dict[str, str]:
    """``modes`` (task -> mode) when every task and mode is known; else ValueError in one sentence."""
    for task, mode in modes.items():
        if task not in TASKS:
            raise ValueError(f"compile is set for '{task}', which is not a model; set it for "
                             f"{' or '.join(TASKS)}.")
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode '{mode}' for the {task} model is not known; use one of "
                             f"{', '.join(COMPILE_MODES)}.")
    return modes


def mode_for(tasks: tuple[str, ...], modes: dict[str, str], warnings: list[str]) -> str:
    """The mode of one forward: a task's own, or in joint mode (one forward, both tasks) the one asked for."""
    asked = [modes.get(task, "none") for task in tasks]
    chosen = next((mode for mode in asked if mode != "none"), "none")
    if len({mode for mode in asked if mode != "none"}) > 1:
        warnings.append(f"joint mode runs one forward for {' and '.join(tasks)}, which asked for compile modes "
                        f"{' and '.join(asked)}; it runs with '{chosen}' (the {tasks[0]} model's).")
    return chosen


class _GuardedForward(nn.Module):
    """A compiled form of ``module``'s forward that falls back to the eager one, once and saying so."""

    mode = "none"

    def __init__(self, module: nn.Module, label: str, warnings: list[str]):
        super().__init__()
        self.torch_module = module
        self.cfg = getattr(module, "cfg", None)      # pixels_of() and the evaluators read the config
        self.label = label
        self.warnings = warnings
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()          # compiling / capturing and replaying
        self._warn_lock = threading.Lock()

    def _fall_back(self, images: torch.Tensor, exc: Exception) -> None:
        with self._warn_lock:
            if self.fallback_reason is not None:
                return
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.fallback_reason = f"{type(exc).__name__}: {first}"
        height, width = images.shape[-2:]
        message = (f"compile '{self.mode}' failed for the {self.label} at input {height}x{width} "
                   f"({self.fallback_reason}); running the eager torch forward instead.")
        self.warnings.append(message)
        log.warning(message)


class InductorForward(_GuardedForward):
    mode = "inductor"

    def __init__(self, module: nn.Module, label: str, warnings: list[str]):
        super().__init__(module, label, warnings)
        # fullgraph: a graph break would silently run part of the model eager; every shipped model and the
        # R-50 configs trace as one graph, so a break is a finding and falls back saying so.
        # A plain attribute, not a submodule: the wrapped module is registered once, as torch_module.
        object.__setattr__(self, "_compiled", torch.compile(module, backend="inductor", dynamic=False,
                                                            fullgraph=True))
        self._compiled_for: set[tuple] = set()

    def forward(self, images: torch.Tensor) -> Any:
        if self.fallback_reason is not None:
            return self.torch_module(images)
        key = (tuple(images.shape), images.dtype, images.device)
        try:
            if key in self._compiled_for:
                return self._compiled(images)
            with self._lock:     # one compile per shape even when several workers start at once
                out = self._compiled(images)
                self._compiled_for.add(key)
                return out
        except Exception as exc:  # a compiler failure: say so once, then eager for good
            self._fall_back(images, exc)
            return self.torch_module(images)


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, static_in: torch.Tensor, static_out: Any):
        self.graph, self.static_in, self.static_out = graph, static_in, static_out
        self.read_out = torch.cuda.Event()     # recorded once a replay's outputs have been cloned


class CudaGraphForward(_GuardedForward):
    mode = "cudagraphs"

    def __init__(self, module: nn.Module, label: str, warnings: list[str]):
        super().__init__(module, label, warnings)
        self._graphs: dict[tuple, _Captured] = {}

    def forward(self, images: torch.Tensor) -> Any:
        if self.fallback_reason is not None or images.device.type != "cuda":
            return self.torch_module(images)
        key = (tuple(images.shape), images.stride(), images.dtype, images.device)
        with self._lock:
            try:
                captured = self._graphs.get(key) or self._capture(images, key)
            except Exception as exc:  # e.g. a host sync inside the forward: not capturable
                self._fall_back(images, exc)
                captured = None
            if captured is not None:
                stream = torch.cuda.current_stream(images.device)
                stream.wait_event(captured.read_out)   # the last replay (maybe another worker's stream) is read out
                captured.static_in.copy_(images)
                captured.graph.replay()                # on the current stream
                out = pytree.tree_map(lambda t: t.clone() if torch.is_tensor(t) else t, captured.static_out)
                captured.read_out.record(stream)
                return out
        return self.torch_module(images)

    def _capture(self, images: torch.Tensor, key: tuple) -> _Captured:
        static_in = images.clone()
        current = torch.cuda.current_stream(images.device)
        side = torch.cuda.Stream(images.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):   # warm-up off the capture: lazy inits, autotuning, per-shape caches
            for _ in range(2):
                self.torch_module(static_in)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.torch_module(static_in)
        captured = _Captured(graph, static_in, static_out)
        self._graphs[key] = captured
        return captured


def compile_forward(module: nn.Module, mode: str, device: torch.device, label: str,
                    warnings: list[str]) -> nn.Module:
    """``module``'s forward in compile ``mode`` on ``device`` (``none``: the module itself); what cannot be
    done on this device is said in ``warnings`` and runs eager."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode '{mode}' is not known; use one of {', '.join(COMPILE_MODES)}.")
    if mode == "none":
        return module
    if mode == "cudagraphs":
        if device.type != "cuda":
            warnings.append(f"compile 'cudagraphs' captures CUDA graphs and needs a CUDA device, but the {label} "
                            f"runs on {device}; it runs eager (compile none) instead.")
            return module
        return CudaGraphForward(module, label, warnings)
    return InductorForward(module, label, warnings)


__all__ = ["COMPILE_MODES", "CudaGraphForward", "InductorForward", "check_compile_modes", "compile_forward",
           "mode_for"]
