"""What a perception node's configure transition builds from its parameters: the models and the engine.

Checks that cost nothing (QoS names, class names, input sizes) run before or right after the models
load, so a wrong parameter fails configure with one sentence and nothing half-built stays behind.
"""
from __future__ import annotations

from collections.abc import Callable

from ros_amf.ros.live_params import class_ids
from ros_amf.ros.params import requested_input_size, resolve_path
from ros_amf.ros.qos import qos_from_name
from ros_amf.runtime.loading import LoadedModel, load_model
from ros_amf.runtime.outputs import check_output_scale
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.stats import PipelineCounters


def load_models(p: dict, tasks: tuple[str, ...], injected: dict[str, LoadedModel] | None,
                logger) -> dict[str, LoadedModel]:
    """The node's models: loaded from the parameters' paths, or the injected ones (tests, benchmarks)."""
    qos_from_name(p["input_qos"], "parameter input_qos")     # cheap checks before loading models
    qos_from_name(p["output_qos"], "parameter output_qos")
    check_output_scale(p["output_scale"])
    if injected is None:
        injected = {task: load_model(task, resolve_path(p[f"{task}.config"]),
                                     resolve_path(p[f"{task}.checkpoint"]) or None, device=p["device"])
                    for task in tasks}
    models = {task: injected[task] for task in tasks}
    for model in models.values():
        if model.random_weights:
            logger.warning(f"{model.task} model '{model.name}' runs with RANDOM weights (no "
                           f"{model.task}.checkpoint given); outputs are meaningless.")
    return models


def engine_config(p: dict, models: dict[str, LoadedModel]) -> EngineConfig:
    """The engine's settings from the node's parameters (class names checked against the instance model)."""
    instance = models.get("instance")
    class_filter: tuple[int, ...] = ()
    if instance is not None and [n for n in p["class_filter"] if n]:
        unknown = [n for n in p["class_filter"] if n and n not in instance.class_names]
        if unknown:
            raise ValueError(f"parameter class_filter names {unknown}, which model '{instance.name}' does not "
                             f"have; valid names: {instance.class_names}.")
        class_filter = class_ids(p["class_filter"], instance.class_names)
    # a task whose size parameters are 0 runs at its model config's own input_size (the engine's default)
    input_sizes = {task: size for task, model in models.items()
                   if (size := requested_input_size(p, task, model.input_size)) is not None}
    return EngineConfig(input_sizes=input_sizes, device=p["device"], precision=p["precision"],
                        channels_last=p["channels_last"], joint=bool(p.get("joint", False)),
                        score_threshold=float(p.get("score_threshold", 0.3)),
                        mask_threshold=float(p.get("mask_threshold", 0.45)),
                        max_instances=int(p.get("max_instances", 100)), class_filter=class_filter,
                        inference_workers=int(p["inference_workers"]), backend=str(p.get("backend", "auto")),
                        output_scale=str(p["output_scale"]),
                        compile={task: str(p.get(f"{task}.compile", "none")) for task in models})


def finish_engine(p: dict, engine, logger) -> None:
    """Torch threads as asked, the warm-up frame, and the start-up warnings in the log."""
    if p["torch_threads"] > 0:   # after the engine, which sets its per-worker share: the user's choice wins
        import torch
        torch.set_num_threads(int(p["torch_threads"]))
    failure = engine.warm_up()
    if failure:
        logger.warning(f"the warm-up frame failed ({failure}); frames that fail like it are counted on stats "
                       "and /diagnostics and not published.")
    for warning in engine.warnings:
        logger.warning(warning)


def build_engine(p: dict, tasks: tuple[str, ...], injected: dict[str, LoadedModel] | None,
                 stats: PipelineCounters, on_result: Callable, on_error: Callable,
                 logger) -> tuple[dict[str, LoadedModel], Engine]:
    """Load (or take the injected) models, build the engine with the parameters and warm it up."""
    models = load_models(p, tasks, injected, logger)
    engine = Engine(engine_config(p, models), instance=models.get("instance"), semantic=models.get("semantic"),
                    stats=stats, on_result=on_result, on_error=on_error)
    finish_engine(p, engine, logger)
    return models, engine
