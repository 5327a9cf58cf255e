"""Loading the two models for inference: config YAML + checkpoint -> an eval-mode module.

Every mismatch (checkpoint of the other task, another architecture, another class count) is a
``CheckpointError`` with one sentence, raised before anything starts, so a node never comes up
half-working.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ros_amf.contract import config as config_io
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation
from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, load_state_into
from ros_amf.contract.input_size import InputSize
from ros_amf.runtime.outputs import palette

# task -> (module, config dataclass, builder)
_BUILDERS = {
    "instance": ("ros_amf.modeling.sparseinst.model", "InstanceModelConfig", "build_instance_model"),
    "semantic": ("ros_amf.modeling.semantic.model", "SemanticModelConfig", "build_semantic_model"),
    # the shared-backbone model is trained as one; it ships as an instance and a semantic checkpoint
    "joint": ("ros_amf.modeling.joint", "JointModelConfig", "build_joint_model"),
}


@dataclass
class LoadedModel:
    task: str                       # "instance" or "semantic"
    name: str                       # e.g. the config file's stem
    module: nn.Module
    class_names: list[str]
    small_object_ids: list[int] = field(default_factory=list)
    random_weights: bool = False    # True when no checkpoint was given (plumbing runs only)
    input_size: InputSize = field(default_factory=InputSize)   # the config's own network input

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _config_class(task: str):
    module_name, cls_name, builder_name = _BUILDERS[task]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), getattr(module, builder_name)


def read_model_config(task: str, path: str | Path):
    """Model YAML -> config dataclass, from the ``model:`` section of a run config (``model:`` +
    ``train:``) or, in an old flat file, from the top level."""
    cls, _ = _config_class(task)
    data = config_io.read_yaml(path)
    if "model" not in data and "train" not in data:
        return config_io.from_dict(cls, data, where=str(path))
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise config_io.ConfigError(f"config file '{path}': unknown section '{unknown[0]}'; "
                                    "use 'model' and 'train'.")
    if not isinstance(data.get("model") or {}, dict):
        raise config_io.ConfigError(f"config file '{path}': the model section must be a mapping of keys to values.")
    return config_io.from_dict(cls, data.get("model") or {}, where=f"{path}:model")


def _num_classes(cfg: Any) -> int | None:
    for key in ("num_classes", "classes", "n_classes"):
        if hasattr(cfg, key):
            return int(getattr(cfg, key))
    return None


def _default_class_names(task: str, count: int | None) -> list[str]:
    try:  # the data helper's label tables give real names for the Cityscapes-style classes
        labels = importlib.import_module("ros_amf.contract.labels")
        tables = ([labels.CITYSCAPES_INSTANCE_NAMES] if task == "instance"
                  else [labels.CITYSCAPES_TRAIN_NAMES, labels.CAMVID_CLASS_NAMES])
        for names in tables:
            if count is None or len(names) == count:
                return list(names)
    except (ImportError, AttributeError):
        pass
    return [f"class_{i}" for i in range(count or 0)]


def _small_object_ids(class_names: list[str]) -> list[int]:
    try:
        labels = importlib.import_module("ros_amf.contract.labels")
        small = set(labels.CITYSCAPES_SMALL_CLASSES) | set(labels.CAMVID_SMALL_CLASSES)
    except (ImportError, AttributeError):
        return []
    return [i for i, name in enumerate(class_names) if name in small]


def adapt_published(loaded: Any, path: Path) -> dict[str, Any] | None:
    """A published SparseInst ``.pth`` (hustvl/SparseInst) as a checkpoint payload; None for other files."""
    from ros_amf.modeling.sparseinst import official_weights
    try:
        return official_weights.official_payload(loaded, str(path))
    except official_weights.OfficialWeightsError as exc:
        raise CheckpointError(str(exc)) from None


def read_checkpoint(path: str | Path, task: str) -> dict[str, Any]:
    """Our checkpoint, or for the instance task also a published SparseInst ``.pth`` (converted in memory)."""
    return load_checkpoint(path, task=task, adapt=adapt_published if task == "instance" else None)


def load_model(task: str, config_path: str | Path | None, checkpoint_path: str | Path | None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Build the model of ``task`` and load its weights; raise CheckpointError on any mismatch."""
    if task not in ("instance", "semantic"):
        raise ValueError(f"task '{task}' is unknown; use 'instance' or 'semantic' (a shared-backbone model ships "
                         "as one checkpoint of each).")
    if not config_path and not checkpoint_path:
        raise CheckpointError(f"no {task} model given; set the {task}.config parameter (a models/*.yaml file) "
                              f"and/or {task}.checkpoint (a models/*.pt file).")
    check_device(device)
    cls, build = _config_class(task)
    payload = read_checkpoint(checkpoint_path, task) if checkpoint_path else None
    if config_path:
        cfg = read_model_config(task, config_path)
        if payload is not None:
            # through the config class: keys added since the checkpoint was saved take their defaults
            stored = dataclasses.asdict(config_io.from_dict(cls, payload.get("model_config") or {},
                                                            where=f"{checkpoint_path}:model_config"))
            mine = dataclasses.asdict(cfg)
            # inference and training choices, not architecture: the config may pick others
            differing = sorted(k for k in set(stored) | set(mine)
                               if k not in _NOT_ARCHITECTURE and _norm(stored.get(k)) != _norm(mine.get(k)))
            if differing:
                key = differing[0]
                raise CheckpointError(
                    f"checkpoint '{checkpoint_path}' was trained with {key}={stored.get(key)!r} but config "
                    f"'{config_path}' says {key}={mine.get(key)!r} (differing keys: {differing}); pass the config "
                    "the checkpoint was trained with, or leave the config empty to use the checkpoint's own.")
        name = Path(config_path).stem
    else:
        cfg = config_io.from_dict(cls, payload["model_config"], where=f"{checkpoint_path}:model_config")
        name = Path(checkpoint_path).stem
    module = build(cfg)
    class_names = _default_class_names(task, _num_classes(cfg))
    if payload is not None:
        load_state_into(module, payload, checkpoint_path)
        class_names = list(payload.get("class_names") or class_names)
        expected = _num_classes(cfg)
        if expected is not None and len(class_names) != expected:
            raise CheckpointError(f"checkpoint '{checkpoint_path}' lists {len(class_names)} class names but its "
                                  f"model has {expected} classes; re-export the checkpoint with matching names.")
    module.eval().to(device)
    return LoadedModel(task=task, name=name, module=module, class_names=class_names,
                       small_object_ids=_small_object_ids(class_names), random_weights=payload is None,
                       input_size=cfg.input_size)


# input size: an inference choice; the pretrained start and frozen parts: training choices (FrozenBN and
# BatchNorm compute the same in eval mode)
_NOT_ARCHITECTURE = {"input_size", "backbone_weights", "backbone_freeze_at", "backbone_frozen_bn"}


def check_device(device: str | torch.device) -> torch.device:
    """The torch device named by a parameter, or one clear sentence why it cannot be used."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device '{device}' is not a torch device ({exc}); use cpu, cuda or cuda:N.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' was asked for but CUDA is not available here; set device to 'cpu'.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA devices); "
                             "use cuda:0..")
    elif parsed.type != "cpu":
        raise ValueError(f"device '{device}' is not supported; use cpu, cuda or cuda:N.")
    return parsed


def _norm(value: Any) -> Any:
    # YAML gives lists where dataclasses hold tuples; compare them as equal
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def find_backbone(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The top-level child that is a backbone encoder (ResNet or EfficientNet-Lite), if any."""
    from ros_amf.modeling.backbones.build import ENCODER_TYPES
    for name, child in module.named_children():
        if isinstance(child, ENCODER_TYPES):
            return name, child
    return None


# The backbone features of the forward now running in this thread (see JointModel): context-local,
# so frames in flight on other inference workers never see each other's features.
_FEATURES_OF_THIS_FORWARD: ContextVar[tuple[torch.Tensor, list[torch.Tensor]] | None] = ContextVar(
    "joint_backbone_features", default=None)


class _GivenFeatures(nn.Module):
    """Stands in for a head's backbone inside ``JointModel``: returns the features JointModel computed
    for this very input instead of computing them again."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        given = _FEATURES_OF_THIS_FORWARD.get()
        if given is None or given[0] is not x:
            raise RuntimeError("joint mode: a head was called on its own; call the JointModel, which runs the "
                               "shared backbone first.")
        return given[1]


def _with_child(module: nn.Module, name: str, child: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` whose child ``name`` is ``child``; every other child, parameter and
    buffer is shared, and ``module`` itself is left untouched."""
    view = copy.copy(module)
    view.__dict__["_modules"] = {**module._modules, name: child}
    return view


class JointModel(nn.Module):
    """Instance and semantic heads on one backbone forward ("joint" mode).

    ``forward(images)`` returns (instance outputs, semantic outputs). The features travel with the call,
    not in shared state, so several inference workers may run it at once; the loaded models are not
    modified, so they can serve several engines, joint or not.
    """

    def __init__(self, instance: nn.Module, semantic: nn.Module, instance_backbone: str, semantic_backbone: str):
        super().__init__()
        self.backbone = getattr(instance, instance_backbone)
        # one backbone pass, fed as the instance model's weights expect: pixels_of() (INT8 calibration, export
        # checks) and the graph cache key read it
        self.cfg = getattr(instance, "cfg", None)
        given = _GivenFeatures()
        self.instance_head = _with_child(instance, instance_backbone, given)
        self.semantic_head = _with_child(semantic, semantic_backbone, given)

    def forward(self, images: torch.Tensor) -> tuple[Any, Any]:
        token = _FEATURES_OF_THIS_FORWARD.set((images, self.backbone(images)))
        try:
            return self.instance_head(images), self.semantic_head(images)
        finally:
            _FEATURES_OF_THIS_FORWARD.reset(token)


def joint_model(instance: nn.Module, semantic: nn.Module) -> tuple[JointModel, list[str]]:
    """The two models as one ``JointModel`` that runs ``instance``'s backbone once for both heads.

    Returns it with warnings (e.g. the semantic checkpoint's backbone weights differ, so they go unused).
    Raises ValueError when the backbones do not match.
    """
    found_i, found_s = find_backbone(instance), find_backbone(semantic)
    if found_i is None or found_s is None:
        raise ValueError("joint mode needs both models to hold a backbone encoder as a direct child; "
                         "set joint to false.")
    (name_i, bb_i), (name_s, bb_s) = found_i, found_s
    state_i, state_s = bb_i.state_dict(), bb_s.state_dict()
    if state_i.keys() != state_s.keys() or any(state_i[k].shape != state_s[k].shape for k in state_i):
        raise ValueError("joint mode needs identical backbones but the instance and semantic configs build "
                         "different ones; set joint to false or use matching backbone settings.")
    warnings = []
    if any(not torch.equal(state_i[k].float(), state_s[k].float()) for k in state_i):
        warnings.append("joint mode: the semantic head now runs on the instance backbone's features, whose "
                        "weights differ from the semantic checkpoint's backbone; expect lower semantic accuracy "
                        "unless the models were trained with a shared backbone.")
    return JointModel(instance, semantic, name_i, name_s), warnings


def class_colours(class_names: list[str]) -> np.ndarray:
    """Overlay colours: the data set's own colours when the names are a known table, else a stable palette."""
    try:
        labels = importlib.import_module("ros_amf.contract.labels")
        known = {tuple(labels.CITYSCAPES_TRAIN_NAMES): labels.CITYSCAPES_TRAIN_COLORS,
                 tuple(labels.CAMVID_CLASS_NAMES): labels.CAMVID_CLASS_COLORS}
        colours_by_name = dict(zip(labels.CITYSCAPES_TRAIN_NAMES, labels.CITYSCAPES_TRAIN_COLORS))
        if tuple(class_names) in known:
            return np.asarray(known[tuple(class_names)], np.uint8)
        if class_names and all(n in colours_by_name for n in class_names):
            return np.asarray([colours_by_name[n] for n in class_names], np.uint8)
    except (ImportError, AttributeError):
        pass
    return palette(len(class_names))


def pixels_of(model: nn.Module) -> PixelNormalisation:
    """The pixel normalisation ``model``'s weights expect (its config says; ImageNet's if it has none)."""
    model = getattr(model, "module", model)      # DistributedDataParallel wraps the model
    return getattr(getattr(model, "cfg", None), "pixel_normalisation", IMAGENET)
