"""Inference backends: the models' forward run by torch, ONNX Runtime or OpenVINO; nothing else changes.

``BackendForward`` stands in for a model module in the engine (and in the evaluators, which call a
module): same input tensor, same output dicts, so pre- and post-processing stay the torch ones. On
the first frame of each padded input shape it exports the graph (``backends_export``), prepares the
backend's form of it, checks it reproduces torch on a synthetic frame and keeps both on disk
(``backends_cache``): a restart loads them instead. A backend that is not installed or fails for a
shape adds one warning and that model runs the torch forward from then on.

Threads: each call runs with ``torch.get_num_threads()`` intra-op threads, the setting the torch path
uses (the engine gives each inference worker its share of the cores). Every concurrent caller gets
its own session / compiled model from a pool, so several inference workers run frames side by side
exactly as the torch path does, one inference in flight per worker.
"""
from __future__ import annotations

import importlib
import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ros_amf.runtime.backends_cache import cache_root, get_or_build
from ros_amf.runtime.backends_export import (INPUT_NAME, OUTPUT_NAMES, check_reproduces, export_onnx, graph_kind,
                                             largest_difference, masks_leave_at_stride8, outputs_from_arrays,
                                             sample_input, torch_export_version, torch_reference, weights_digest)
from ros_amf.runtime.compile import check_compile_modes, compile_forward, mode_for
from ros_amf.runtime.int8 import calibration_key, check_int8, nncf_version, quantize_to_ir
from ros_amf.runtime.loading import pixels_of

# openvino-int8: OpenVINO after NNCF post-training quantisation (runtime.int8); never chosen by "auto"
BACKENDS = ("torch", "onnxruntime", "openvino", "openvino-int8")
CHOICES = ("auto",) + BACKENDS
# what "auto" runs on a CPU in fp32, per model: the fastest backend that passed the equality tests, measured
# on a quiet 2-core machine (README "Inference backends"): onnxruntime for the instance model (2.44x torch
# bare, OpenVINO 1.77x), OpenVINO for the semantic model (2.34x, onnxruntime 1.56x) and for the joint graph
DEFAULT_CPU_BACKENDS = {("instance",): "onnxruntime", ("semantic",): "openvino", ("instance", "semantic"): "openvino"}


def default_cpu_backend(tasks: tuple[str, ...] = ("instance",)) -> str:
    """What ``auto`` runs on a CPU in fp32 for a forward of ``tasks``."""
    return DEFAULT_CPU_BACKENDS.get(tuple(tasks), "onnxruntime")
PIP_PINS = {"onnxruntime": "onnxruntime==1.31.1", "openvino": "openvino==2026.4.1"}

log = logging.getLogger(__name__)
Runner = Callable[[np.ndarray], list]


def check_backend_name(name: str) -> str:
    if name not in CHOICES:
        raise ValueError(f"backend '{name}' is not known; use one of {', '.join(CHOICES)}.")
    return name


def backend_version(name: str) -> str:
    """The installed version of ``name``'s package; ImportError (one sentence) when it is not installed."""
    if name == "torch":
        return torch.__version__
    if name == "openvino-int8":
        return f"{backend_version('openvino')}+nncf-{nncf_version()}"
    try:
        module = importlib.import_module(name)
        importlib.import_module("onnx")          # the exporter writes ONNX for both backends
        importlib.import_module("onnxscript")
    except ImportError as exc:
        raise ImportError(f"backend '{name}' is not installed ({exc}); install it with "
                          f"'pip install {PIP_PINS[name]} onnx onnxscript' or set backend to torch.") from None
    return str(getattr(module, "__version__", "unknown"))


def backend_installed(name: str) -> bool:
    """Whether backend ``name`` (and what it needs) is installed."""
    try:
        backend_version(name)
        return True
    except ImportError:
        return False


def resolve_backend(asked: str, device: torch.device, precision: str, random_weights: bool,
                    tasks: tuple[str, ...] = ("instance",)) -> tuple[str, list[str]]:
    """The backend that will run a forward of ``tasks``, and warnings when the one asked for cannot."""
    check_backend_name(asked)
    cpu_fp32 = device.type == "cpu" and precision == "fp32"
    if asked == "auto":
        # random weights are plumbing runs: exporting a graph nobody keeps would only cost start-up time
        asked = default_cpu_backend(tasks) if cpu_fp32 and not random_weights else "torch"
        if asked == "torch":
            return asked, []
        try:
            backend_version(asked)
        except ImportError:
            return "torch", []   # auto quietly keeps torch where the default backend is not installed
        return asked, []
    if asked == "torch":
        return asked, []
    if not cpu_fp32:
        return "torch", [f"backend '{asked}' runs on the CPU in fp32 only, not on device {device} in {precision}; "
                         "running the torch forward instead."]
    try:
        backend_version(asked)
    except ImportError as exc:
        return "torch", [f"{exc} Running the torch forward instead."]
    return asked, []


# ----------------------------------------------------------------------------------------- runners
def _onnxruntime_runner(onnx_path: Path, threads: int) -> Runner:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting: the other stages and inference workers need the cores between kernels
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {INPUT_NAME: images})


def _openvino_runner(xml_path: Path, threads: int) -> Runner:
    import openvino as ov
    compiled = ov.Core().compile_model(str(xml_path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",   # equal outputs: no bf16 on CPUs that have it
        "ENABLE_CPU_PINNING": False,         # a robot's CPU is shared with other nodes: pinned threads wait on them
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(images: np.ndarray) -> list:
        results = request.infer({0: images})
        return [np.array(results[output]) for output in outputs]   # a copy: the request reuses its buffers
    return run


def _prepare_backend(backend: str, onnx_path: Path, folder: Path, hw: tuple[int, int], pixels) -> Path:
    """The file the backend loads: the ONNX graph itself (onnxruntime), OpenVINO IR converted from it, or that
    IR quantised to INT8 on calibration frames of the graph's input ``hw`` normalised as ``pixels``."""
    if backend == "onnxruntime":
        return onnx_path
    if backend == "openvino-int8":
        return quantize_to_ir(onnx_path, folder, hw, pixels)
    import openvino as ov
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return folder / "model.xml"


RUNNERS = {"onnxruntime": _onnxruntime_runner, "openvino": _openvino_runner, "openvino-int8": _openvino_runner}


def make_runner(backend: str, path: str | Path, threads: int) -> Runner:
    """A callable running the graph at ``path`` (ONNX; OpenVINO also takes its IR .xml) in ``backend``:
    a [1,3,H,W] float32 array in, the outputs as arrays out."""
    backend_version(backend)
    return RUNNERS[backend](Path(path), threads)


def _folder_safe(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", version)   # openvino's version has slashes in it


# ------------------------------------------------------------------------------------ the forward
class BackendForward(nn.Module):
    """``module``'s inference forward run by ``backend`` (falls back to torch, saying so in ``warnings``)."""

    def __init__(self, backend: str, module: nn.Module, label: str, warnings: list[str] | None = None,
                 cache: Path | None = None):
        super().__init__()
        if backend not in RUNNERS:
            raise ValueError(f"backend '{backend}' has no compiled forward; use one of {sorted(RUNNERS)}.")
        self.backend = backend
        self.version = backend_version(backend)
        self.torch_module = module
        self.kind = graph_kind(module)
        self.upsample_masks = masks_leave_at_stride8(module)
        self.cfg = getattr(module, "cfg", None)     # pixels_of() and the evaluators read the config
        self.label = label
        self.warnings = warnings if warnings is not None else []
        self.cache = Path(cache) if cache is not None else cache_root()
        self.fallback_reason: str | None = None
        self.cache_events: list[dict] = []          # per shape: found in the cache, or (re)built and why
        self._digest: str | None = None
        self._artefacts: dict[tuple[int, int], Path] = {}
        self._pools: dict[tuple, list[Runner]] = {}
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()

    def forward(self, images: torch.Tensor) -> Any:
        if self.fallback_reason is None and images.device.type == "cpu" and images.dtype == torch.float32:
            try:
                return self._run(images)
            except Exception as exc:  # any backend failure: say so once, then torch for good
                self._fall_back(tuple(images.shape[-2:]), exc)
        return self.torch_module(images)

    def prepare(self, hw: tuple[int, int]) -> None:
        """Export, prepare and check the graph for input ``hw`` now (else the first frame of that size does)."""
        self._put(self._take(hw, torch.get_num_threads()), hw, torch.get_num_threads())

    def _run(self, images: torch.Tensor) -> Any:
        hw, threads = (int(images.shape[-2]), int(images.shape[-1])), torch.get_num_threads()
        if images.shape[0] != 1:
            raise ValueError(f"the {self.backend} graphs take one image per call, not {images.shape[0]}")
        runner = self._take(hw, threads)
        try:
            arrays = runner(np.ascontiguousarray(images.numpy()))
        finally:
            self._put(runner, hw, threads)
        return outputs_from_arrays(self.kind, arrays, self.upsample_masks)

    def _take(self, hw: tuple[int, int], threads: int) -> Runner:
        with self._lock:
            pool = self._pools.setdefault((hw, threads), [])
            if pool:
                return pool.pop()
        # none free: this caller gets its own session (one per inference in flight)
        return RUNNERS[self.backend](self._artefact(hw), threads)

    def _put(self, runner: Runner, hw: tuple[int, int], threads: int) -> None:
        with self._lock:
            self._pools.setdefault((hw, threads), []).append(runner)

    def _artefact(self, hw: tuple[int, int]) -> Path:
        with self._build_lock:
            if hw not in self._artefacts:
                self._artefacts[hw] = self._build(hw)
            return self._artefacts[hw]

    def _build(self, hw: tuple[int, int]) -> Path:
        if self._digest is None:
            self._digest = weights_digest(self.torch_module)
        base = self.cache / "graphs" / self._digest[:32] / f"{self.kind}-{hw[0]}x{hw[1]}"
        onnx_key = {"weights_sha256": self._digest, "kind": self.kind, "input_hw": list(hw),
                    "exporter": torch_export_version()}

        def build_onnx(tmp: Path) -> dict:
            export_onnx(self.torch_module, self.kind, hw, tmp / "model.onnx")
            return {}
        # one folder per exporter: two installs sharing a cache (a torch upgrade) do not rebuild each other's graphs
        onnx = get_or_build(base / f"onnx-{_folder_safe(onnx_key['exporter'])}", onnx_key, build_onnx)
        onnx_path = onnx.folder / "model.onnx"
        backend_key = {**onnx_key, "onnx_sha256": onnx.meta["files"]["model.onnx"], "backend": self.backend,
                       "backend_version": self.version}
        pixels = pixels_of(self.torch_module)   # from the config, which the weights digest covers
        int8 = self.backend == "openvino-int8"
        if int8:
            backend_key["calibration"] = calibration_key()

        def build_backend(tmp: Path) -> dict:
            loaded = _prepare_backend(self.backend, onnx_path, tmp, hw, pixels)
            sample = sample_input(hw, pixels=pixels)   # the range the graph will see
            reference = torch_reference(self.torch_module, self.kind, sample)
            outputs = RUNNERS[self.backend](loaded, torch.get_num_threads())(sample)
            what = f"the {self.backend} graph of the {self.label}"
            if int8:   # quantised: held to "not broken", its accuracy cost is measured by ros-amf eval
                return {"relative_rms_error_vs_torch": check_int8(reference, outputs, OUTPUT_NAMES[self.kind], what),
                        "max_abs_diff_vs_torch": largest_difference(reference, outputs, self.kind)[0],
                        "loads": loaded.name}
            return {"max_abs_diff_vs_torch": check_reproduces(reference, outputs, self.kind, what),
                    "loads": loaded.name}
        # named by the exporter too: the graph made from each exporter's ONNX keeps its own folder
        folder = f"{self.backend}-{_folder_safe(self.version)}-{_folder_safe(onnx_key['exporter'])}"
        prepared = get_or_build(base / folder, backend_key, build_backend)
        self.cache_events.append({"input_hw": list(hw), "onnx": onnx.rebuilt_because or "cached",
                                  self.backend: prepared.rebuilt_because or "cached", "folder": str(base)})
        # onnxruntime loads the exported graph itself; OpenVINO its IR in the backend's own entry
        return onnx_path if self.backend == "onnxruntime" else prepared.folder / prepared.meta["loads"]

    def _fall_back(self, hw: tuple[int, ...], exc: Exception) -> None:
        with self._lock:
            if self.fallback_reason is not None:
                return
            self.fallback_reason = f"{type(exc).__name__}: {exc}"
        message = (f"backend '{self.backend}' failed for the {self.label} at input {hw[0]}x{hw[1]} "
                   f"({self.fallback_reason}); running the torch forward instead.")
        self.warnings.append(message)
        log.warning(message)


def backend_runs(asked: str, runs: list[tuple[tuple[str, ...], nn.Module]], device: torch.device, precision: str,
                 random_weights: bool, warnings: list[str], compile_modes: dict[str, str] | None = None
                 ) -> tuple[str, list[tuple[tuple[str, ...], nn.Module]]]:
    """The engine's (tasks, module) forwards with each module run by the backend ``asked`` resolves to; on the
    torch backend each forward is compiled as ``compile_modes`` (task -> none | inductor | cudagraphs) asks."""
    compiled = {task: mode for task, mode in check_compile_modes(dict(compile_modes or {})).items() if mode != "none"}
    if asked == "auto" and compiled:
        asked = "torch"      # compile is a setting of the torch forward: asking for it is asking for torch
    chosen = []
    for tasks, module in runs:      # "auto" may pick another backend per model
        backend, notes = resolve_backend(asked, device, precision, random_weights, tasks)
        warnings += [note for note in notes if note not in warnings]
        label = f"{'+'.join(tasks)} model"
        if backend == "torch":
            chosen.append((backend, tasks, compile_forward(module, mode_for(tasks, compiled, warnings), device,
                                                           label, warnings)))
        else:
            chosen.append((backend, tasks, BackendForward(backend, module, label, warnings)))
    used = [name for name in dict.fromkeys(backend for backend, _, _ in chosen) if name != "torch"]
    if compiled and used:
        warnings.append(f"compile ({', '.join(f'{t} {m}' for t, m in compiled.items())}) applies to the torch "
                        f"forward only, and backend '{used[0]}' runs the models; it is not used.")
    names = {backend for backend, _, _ in chosen}
    summary = names.pop() if len(names) == 1 else \
        " + ".join(f"{backend} ({'+'.join(tasks)})" for backend, tasks, _ in chosen)
    return summary, [(tasks, forward) for _, tasks, forward in chosen]


def backend_module(asked: str, module: nn.Module, label: str, device: str = "cpu",
                   task: str = "instance") -> tuple[nn.Module, list[str]]:
    """``module`` (a ``task`` model) run by the backend ``asked`` resolves to (for callers holding a bare
    module: the evaluators), with the warnings to show; fallbacks during the run are appended to the same list."""
    warnings: list[str] = []
    backend, notes = resolve_backend(asked, torch.device(device), "fp32", False, (task,))
    warnings += notes
    if backend == "torch":
        return module, warnings
    return BackendForward(backend, module, label, warnings), warnings
