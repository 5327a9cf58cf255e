"""One checkpoint format for both models.

A checkpoint is a ``torch.save`` of a dict::

    {"format": "ros_amf-checkpoint/1",
     "task": "instance" | "semantic",
     "model_config": {...},        # the dataclass of the model, as a dict
     "class_names": [...],         # contiguous class ids 0..K-1, in order
     "state_dict": {...},          # tensors (fp16 allowed for storage)
     "train_state": {...} | None,  # optimiser / scheduler / iteration, only in training checkpoints
     "meta": {...}}                # command line, scores, data set, anything informative

Writes are atomic (temporary file + rename), so a training run killed mid-save never leaves
a broken checkpoint behind. ``sha256_of`` gives the hash that reports and ``models/*.sha256``
record.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "ros_amf-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or for another model; the message says which and what to do."""


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


def load_checkpoint(path: str | Path, *, task: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass the path of a .pt file (see models/).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}: {exc}); "
                              "it is corrupt or truncated, copy it again.") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a ros_amf checkpoint (format {FORMAT} expected); "
                              "train one with 'ros-amf train'.")
    if task is not None and payload["task"] != task:
        raise CheckpointError(f"checkpoint '{path}' holds a {payload['task']} model but a {task} model was "
                              f"asked for; pass a {task} checkpoint.")
    return payload


def load_state_into(model: torch.nn.Module, payload: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Load weights strictly, turning shape or key mismatches into one clear sentence."""
    own = model.state_dict()
    state = payload["state_dict"]
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
