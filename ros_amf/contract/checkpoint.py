"""One checkpoint format for both models.

A checkpoint is a ``torch.save`` of a dict::

    {"format": "ros_amf-checkpoint/1",
     "task": "instance" | "semantic",
     "model_config": {...},        # the dataclass of the model, as a dict
     "class_names": [...],         # contiguous class ids 0..K-1, in order
     "state_dict": {...},          # tensors (fp16 allowed for storage)
     "train_state": {...} | None,  # optimiser / scheduler / iteration, only in training checkpoints
     "meta": {...}}                # command line, scores, data set, anything informative

Loading never runs code from the file: ``torch.load(weights_only=True)`` admits only tensors, plain
containers and numbers, plus the numpy array types a training checkpoint's RNG state holds. A file whose
pickle asks for anything else (a function to call, a class to build) is refused before it runs.

Writes are atomic (temporary file + rename), so a training run killed mid-save never leaves
a broken checkpoint behind. ``sha256_of`` gives the hash that reports and ``models/*.sha256``
record.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FORMAT = "ros_amf-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or for another model; the message says which and what to do."""


# numpy's RNG state (np.random.get_state) in training checkpoints: an array, rebuilt from data only.
_NUMPY_CORE = getattr(np, "_core", None) or np.core      # numpy 2 renamed np.core (the GPU image may have 1.x)
_NUMPY_DATA_TYPES = [np.ndarray, np.dtype, _NUMPY_CORE.multiarray._reconstruct, type(np.dtype(np.uint32))]


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` that cannot execute code: only weights-only types (and numpy arrays) are admitted."""
    with torch.serialization.safe_globals(_NUMPY_DATA_TYPES):
        return torch.load(path, map_location="cpu", weights_only=True)


def save_checkpoint(path: str | Path, *, task: str, model_config: dict[str, Any], class_names: list[str],
                    state_dict: dict[str, torch.Tensor], train_state: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None, half: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if half:
        state_dict = {k: (v.half() if v.is_floating_point() else v) for k, v in state_dict.items()}
    payload = {"format": FORMAT, "task": task, "model_config": model_config, "class_names": list(class_names),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "train_state": train_state, "meta": meta or {}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared and shipped
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, *, task: str | None = None,
                    adapt: Callable[[Any, Path], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """``adapt(loaded, path)`` may turn a foreign file (a published checkpoint) into a payload, or return None."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass the path of a .pt file (see models/).")
    try:
        _check_archive(path)
        payload = safe_torch_load(path)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:   # weights_only refused a global: the file wants to run code
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        unsafe = named.group(1) if named else _first_line(exc)
        raise CheckpointError(f"checkpoint '{path}' was refused: its pickle asks for code ({unsafe}) that a weights "
                              "file never needs, and nothing of it was run; use a checkpoint from a source you trust, "
                              "saved as tensors and plain values.") from None
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {_read_failure(exc, path)}; "
                              "copy it again.") from None
    if adapt is not None and (not isinstance(payload, dict) or payload.get("format") != FORMAT):
        payload = adapt(payload, path) or payload
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a ros_amf checkpoint (format {FORMAT} expected); "
                              "train one with 'ros-amf train'.")
    if task is not None and payload["task"] != task:
        raise CheckpointError(f"checkpoint '{path}' holds a {payload['task']} model but a {task} model was "
                              f"asked for; pass a {task} checkpoint.")
    return payload


def _read_failure(exc: BaseException, path: Path) -> str:
    """Why torch could not read a file, short: its own text for a cut-off zip runs to a paragraph."""
    if isinstance(exc, EOFError) or "central directory" in str(exc):
        return (f"it ends early ({path.stat().st_size} bytes, without the archive directory a complete "
                "checkpoint ends with), so it is truncated")
    return f"it is corrupt ({type(exc).__name__}: {_first_line(exc)})"


def _check_archive(path: Path) -> None:
    """torch does not check the CRC32 its zip format stores per record: a flipped byte in the weights would
    load silently, so check them (about 1 s per GB) and name the damaged record."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy (pre-1.6) format carries no checksums
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RuntimeError(str(exc)) from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint '{path}' is corrupt: its record '{damaged}' fails its checksum, so the "
                              "weights are damaged; copy it again.")


def _first_line(exc: BaseException) -> str:
    """torch's messages can run to a page; one line of it is enough for a sentence."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines or [type(exc).__name__])[0][:200]


def load_state_into(model: torch.nn.Module, payload: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Load weights strictly, turning shape or key mismatches into one clear sentence.

    Keys a module lists in ``optional_state_keys`` (state added after older checkpoints were saved) may be
    absent; they load as zeros."""
    own = model.state_dict()
    optional = {f"{prefix}.{key}" if prefix else key for prefix, module in model.named_modules()
                for key in getattr(module, "optional_state_keys", ())}
    state = {**{k: torch.zeros_like(own[k]) for k in optional if k in own and k not in payload["state_dict"]},
             **payload["state_dict"]}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{path}' does not fit this model (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}); use the model config it was trained with.")
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(f"checkpoint '{path}' does not fit this model: '{name}' has shape "
                                  f"{tuple(tensor.shape)} but the model expects {tuple(own[name].shape)} "
                                  "(wrong class count or config?); use the matching config.")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
