"""A claims study: arms (model configs) x seeds under one training recipe, scored on a held-out test split.

``scripts/claims_study.py`` runs one; this module holds what does not need a process or a plot:

- :class:`StudySpec`, read from a small YAML (``models/study/*.yaml``) by :func:`load_study_spec`;
- :func:`run_recipe`: the run config of one (arm, seed) — the arm's ``model:`` section with the study's
  common ``train:`` recipe, so that for a given seed every arm sees the same data order, augmentation
  draws and lr schedule (``fit`` seeds the sampler and the augmentation from ``train.seed`` alone);
- :func:`run_state` and :func:`checkpoints_to_score`: which runs are finished, which to resume, which
  snapshots make the training curve; :func:`claim_run` lets several workers (one per core) share the runs;
- :func:`score_checkpoint`: the project's evaluators on the test split (semantic mIoU / mIoU_S / mIoU_L,
  instance COCO mask AP / AP50 / APs); :func:`score_prior_corrected` scores a semantic model as it would
  ship, with the class-prior correction chosen on a split of the training data;
- :func:`aggregate` and :func:`markdown_table`: per arm mean ± sd over seeds and the paired difference
  (arm − baseline, seed by seed) with its spread.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ros_amf.contract.config import ConfigError, from_dict, read_yaml, to_dict
from ros_amf.contract.input_size import InputSize
from ros_amf.training.config import TrainConfig, read_train_config
from ros_amf.training.semantic import SemanticTrainConfig

# display name -> key in the evaluator's summary
SEMANTIC_METRICS = {"mIoU": "miou", "mIoU_S": "miou_small", "mIoU_L": "miou_large"}
INSTANCE_METRICS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APl": "APl"}
DEFAULT_METRICS = {"semantic": ("mIoU", "mIoU_S", "mIoU_L"), "instance": ("AP", "AP50", "APs")}
RECIPE_FILE = "study_recipe.yaml"   # the run config as the study wrote it; also what --config reads
DATA_FILE = "study_data.yaml"       # the training data the run read (not part of a --config file)


class StudyError(ValueError):
    """A study spec, run folder or data root is wrong; the message says what to do."""


@dataclass
class Arm:
    name: str          # a short label: folder name, table row, plot legend
    config: str        # model YAML; only its model: section is used


@dataclass
class Budget:
    iterations: int                          # train.max_iters of every run
    batch_size: int
    crop: tuple[int, int] | None = None      # train.crop [H, W]
    short_sides: tuple[int, ...] = ()        # train.min_sizes (empty: the recipe's)
    threads: int = 2                         # torch threads for training and scoring


@dataclass
class StudySpec:
    task: Literal["semantic", "instance"]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    budget: Budget
    train_data: str
    test_data: str
    eval_every: int                          # snapshot (and score) every N iterations: the curves
    train: dict[str, Any] = field(default_factory=dict)   # the common train: recipe (TrainConfig keys)
    claim: str = ""                          # one line: what is being tested
    baseline: str = ""                       # arm the differences are taken from (default: the first)
    dataset: Literal["cityscapes", "camvid"] = "cityscapes"   # semantic data layout
    train_split: str = "train"
    test_split: str = "val"
    test_limit: int = 0                      # score the final checkpoint on the first N test frames (0 = all)
    curve_limit: int = 0                     # the same for the intermediate snapshots (0 = test_limit)
    eval_input: InputSize | None = None      # network input when scoring (default: each model's own)
    metrics: tuple[str, ...] = ()            # default: DEFAULT_METRICS[task]
    min_seeds: int = 3                       # the claims need at least this many seeds

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.arms[0].name

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.metrics or DEFAULT_METRICS[self.task]


def _resolve(path: str, base: Path) -> str:
    """Relative paths in a spec are relative to the working directory if they exist there, else to the spec."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    return str(base / candidate) if (base / candidate).exists() else str(candidate)


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and check a study YAML; every problem is one sentence naming the file and key."""
    path = Path(path)
    try:
        spec = from_dict(StudySpec, read_yaml(path), where=str(path))
    except ValueError as exc:   # ConfigError, or an InputSize that refuses its values
        raise StudyError(str(exc)) from None
    return check_study_spec(spec, str(path), base=path.parent)


def check_study_spec(spec: StudySpec, where: str, base: Path | None = None) -> StudySpec:
    """Values the type check lets through: names, seeds, budget, metric names, paths."""
    names = [arm.name for arm in spec.arms]
    if len(names) < 2:
        raise StudyError(f"{where}: a study needs at least two arms to compare, got {len(names)}.")
    if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
        raise StudyError(f"{where}: arm names must be distinct, non-empty and without '/', got {names}.")
    if spec.baseline and spec.baseline not in names:
        raise StudyError(f"{where}: baseline '{spec.baseline}' is not one of the arms {names}.")
    if len(set(spec.seeds)) != len(spec.seeds) or len(spec.seeds) < spec.min_seeds:
        raise StudyError(f"{where}: give at least {spec.min_seeds} distinct seeds (the claims need a spread), "
                         f"got {list(spec.seeds)}.")
    if spec.budget.iterations <= 0 or spec.budget.batch_size <= 0 or spec.budget.threads < 0:
        raise StudyError(f"{where}: budget.iterations and budget.batch_size must be positive and threads >= 0.")
    if spec.eval_every <= 0:
        raise StudyError(f"{where}: eval_every must be a positive number of iterations, not {spec.eval_every}.")
    if spec.budget.crop is not None and (len(spec.budget.crop) != 2 or any(v <= 0 or v % 32 for v in spec.budget.crop)):
        raise StudyError(f"{where}: budget.crop must be [height, width] in multiples of 32, "
                         f"not {list(spec.budget.crop)}.")
    known = SEMANTIC_METRICS if spec.task == "semantic" else INSTANCE_METRICS
    unknown = [m for m in spec.metric_names if m not in known]
    if unknown:
        raise StudyError(f"{where}: metric '{unknown[0]}' is not reported for {spec.task} models; "
                         f"use some of {list(known)}.")
    for key in ("max_iters", "epochs", "batch_size", "seed", "snapshot_every", "max_minutes"):
        if key in spec.train:
            raise StudyError(f"{where}: train.{key} is set by the study (budget, seeds, eval_every); "
                             "remove it from the train: recipe.")
    if base is not None:
        spec.arms = tuple(Arm(a.name, _resolve(a.config, base)) for a in spec.arms)
        spec.train_data, spec.test_data = _resolve(spec.train_data, base), _resolve(spec.test_data, base)
    return spec


def with_budget(spec: StudySpec, **changes: Any) -> StudySpec:
    """``spec`` with budget / eval fields replaced (None = keep): the command line's overrides."""
    budget_keys = {"iterations", "batch_size", "crop", "short_sides", "threads"}
    budget = to_dict(spec.budget)
    data = to_dict(spec)
    for key, value in changes.items():
        if value is None:
            continue
        (budget if key in budget_keys else data)[key] = value
    data["budget"] = budget
    try:
        spec = from_dict(StudySpec, data, where="command line")
    except ValueError as exc:
        raise StudyError(str(exc)) from None
    return check_study_spec(spec, "command line")


def train_config_class(task: str) -> type[TrainConfig]:
    return SemanticTrainConfig if task == "semantic" else TrainConfig


def run_recipe(spec: StudySpec, arm: Arm, seed: int) -> dict[str, Any]:
    """The run config (``model:`` + ``train:``) of one (arm, seed), as plain YAML-ready data.

    Everything but the model section is the same for every arm: the spec's recipe, the budget, the
    seed (data order, augmentation, initialisation of the new layers) and the snapshot interval."""
    try:
        arm_file = read_yaml(arm.config)
    except ConfigError as exc:
        raise StudyError(f"arm '{arm.name}': {exc}") from None
    model = arm_file.get("model")
    if not isinstance(model, dict):
        raise StudyError(f"arm '{arm.name}': config '{arm.config}' has no model: section; "
                         "point it at a model YAML such as models/fpn_effl0.yaml.")
    train = {**spec.train, "max_iters": spec.budget.iterations, "epochs": 0.0,
             "batch_size": spec.budget.batch_size, "seed": int(seed), "snapshot_every": spec.eval_every,
             # a checkpoint at least at every snapshot, so an interrupted run loses little
             "checkpoint_every": min(int(spec.train.get("checkpoint_every", spec.eval_every)), spec.eval_every)}
    if spec.budget.crop is not None:
        train["crop"] = list(spec.budget.crop)
    if spec.budget.short_sides:
        train["min_sizes"] = list(spec.budget.short_sides)
    # fail here, in one sentence, rather than in the sixth training process
    try:
        cfg = read_train_config(train, train_config_class(spec.task), f"study recipe for arm '{arm.name}'")
    except ConfigError as exc:
        raise StudyError(str(exc)) from None
    recipe_train = to_dict(cfg)
    recipe_train = {k: list(v) if isinstance(v, tuple) else v for k, v in recipe_train.items()}
    return {"model": model, "train": recipe_train}


def run_data(spec: StudySpec) -> dict[str, Any]:
    """What a run is trained on: studies that share a folder must not share runs trained on other data."""
    return {"train_data": str(Path(spec.train_data).resolve()), "train_split": spec.train_split,
            "dataset": spec.dataset if spec.task == "semantic" else None}


def run_state(run_dir: Path, recipe: dict[str, Any], data: dict[str, Any] | None = None) -> str:
    """``"done"`` (trained to the budget), ``"resume"`` (a last.pt to continue) or ``"new"``.

    A run folder written for another recipe, or trained on other data (``data``, when the folder records
    it: runs from before that was recorded are taken as they are), is refused: reusing it would mix
    budgets or data in one table."""
    written_data = run_dir / DATA_FILE
    if data is not None and written_data.is_file() and yaml.safe_load(written_data.read_text()) != data:
        raise StudyError(f"'{run_dir}' was trained on {yaml.safe_load(written_data.read_text())}, but this study "
                         f"trains on {data}; give the study another --out folder or delete that run.")
    written = run_dir / RECIPE_FILE
    if written.is_file():
        previous = yaml.safe_load(written.read_text())
        if previous != recipe:
            differing = sorted(k for section in ("model", "train")
                               for k in set(previous.get(section, {})) | set(recipe[section])
                               if previous.get(section, {}).get(k) != recipe[section].get(k))
            raise StudyError(f"'{run_dir}' was trained with another recipe (differs in {', '.join(differing)}); "
                             "give the study another --out folder or delete that run.")
    summary = run_dir / "summary.json"
    if summary.is_file() and (run_dir / "model.pt").is_file():
        if json.loads(summary.read_text()).get("iterations") == recipe["train"]["max_iters"]:
            return "done"
    return "resume" if (run_dir / "last.pt").is_file() else "new"


CLAIM_FILE = ".claimed_by"   # "pid start-time" of the worker training a run: two workers share a study's runs


def claim_run(run_dir: Path) -> bool:
    """Take ``run_dir`` for this process; False when a live process holds it.

    Lets one worker per core run the same study command: each trains the runs no other worker holds.
    A claim whose process is gone (killed, session ended) is taken over, so an interrupted run resumes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    started = _start_time(os.getpid())
    claim = f"{os.getpid()}" + ("" if started is None else f" {started}")
    for _ in range(2):   # the second try follows removing a dead worker's claim
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)   # atomic: one of two racing workers wins
        except FileExistsError:
            holder, holder_started = _claim_holder(path)
            if holder == os.getpid():
                return True
            if holder and _alive(holder) and holder_started in (None, _start_time(holder)):
                return False
            if not holder and _age_s(path) < 10.0:   # being written by a worker that just won the race
                return False
            path.unlink(missing_ok=True)   # its worker is gone, or the pid now belongs to another process
            continue
        try:
            os.write(fd, claim.encode())   # at once: a racing worker must not find it empty
        finally:
            os.close(fd)
        return True
    return False


def release_run(run_dir: Path) -> None:
    """Drop this process's claim on ``run_dir`` (see :func:`claim_run`)."""
    path = run_dir / CLAIM_FILE
    if _claim_holder(path)[0] == os.getpid():
        path.unlink(missing_ok=True)


def _claim_holder(path: Path) -> tuple[int, int | None]:
    """(pid, its start time) in a claim file; pid 0 when there is none or it cannot be read, start time None
    when the claim does not record one (claims written before it was recorded)."""
    try:
        fields = path.read_text().split()
        return int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
    except (OSError, ValueError, IndexError):
        return 0, None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid it names
    one process, where a pid alone is reused after a restart. None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        pass
    return True


def checkpoints_to_score(run_dir: Path, iterations: int, eval_every: int) -> list[tuple[int, Path]]:
    """(iteration, file) of the curve: the fp16 snapshots every ``eval_every`` iterations, then the final
    model.pt (the same weights as the last snapshot when the budget is a multiple of ``eval_every``)."""
    points = []
    for iteration in range(eval_every, iterations, eval_every):
        path = run_dir / f"snapshot_{iteration:06d}.pt"
        if not path.is_file():
            raise StudyError(f"'{path}' is missing from a finished run; delete '{run_dir}' to train it again.")
        points.append((iteration, path))
    return points + [(iterations, run_dir / "model.pt")]


def score_checkpoint(spec: StudySpec, checkpoint: Path, limit: int, device: str = "cpu") -> dict[str, Any]:
    """The study's metrics of one checkpoint on the test split (display names -> value), plus the
    evaluator's per-class figures and speed."""
    from ros_amf.contract.checkpoint import CheckpointError

    try:
        if spec.task == "semantic":
            return _score_semantic(spec, checkpoint, limit, device)
        return _score_instance(spec, checkpoint, limit, device)
    except (CheckpointError, ConfigError) as exc:
        raise StudyError(str(exc)) from None


_TEST_SETS: dict[tuple[str, str, str], Any] = {}   # open each test split once per process


def _semantic_split(spec: StudySpec, root: str, split: str):
    from ros_amf.evaluation.semantic import open_semantic_dataset

    key = (spec.dataset, root, split)
    if key not in _TEST_SETS:
        _TEST_SETS[key] = open_semantic_dataset(*key)
    return _TEST_SETS[key]


def _score_semantic(spec: StudySpec, checkpoint: Path, limit: int, device: str) -> dict[str, Any]:
    from ros_amf.evaluation.semantic import load_semantic_model

    model, payload = load_semantic_model(checkpoint)
    return _score_semantic_model(spec, model, payload, checkpoint, limit, device)


def _score_semantic_model(spec: StudySpec, model, payload: dict, checkpoint: Path, limit: int,
                          device: str) -> dict[str, Any]:
    from ros_amf.evaluation.semantic import evaluate, small_ids_of

    dataset = _semantic_split(spec, spec.test_data, spec.test_split)
    if len(dataset.class_names) != model.cfg.num_classes:
        raise StudyError(f"{checkpoint} predicts {model.cfg.num_classes} classes but the test data has "
                         f"{len(dataset.class_names)}; test on the data set the arms were trained for.")
    summary = evaluate(model.to(device), dataset, spec.eval_input or model.cfg.input_size,
                       small_ids_of(dataset, spec.dataset), limit, device=device,
                       class_names=list(payload.get("class_names") or []) or None)
    metrics = {name: summary[key] for name, key in SEMANTIC_METRICS.items()}
    return {"metrics": metrics, "per_class": summary["per_class"], "images": summary["images"],
            "seconds_per_image": summary["seconds_per_image"]}


def check_calibration_split(spec: StudySpec, calibration_split: str) -> None:
    """One sentence, before anything trains, for a calibration split that is the test split or is not there."""
    if (Path(spec.train_data).resolve(), calibration_split) == (Path(spec.test_data).resolve(), spec.test_split):
        raise StudyError(f"split '{calibration_split}' of {spec.train_data} is the study's test split; choose alpha "
                         "on a validation split of the training data, never on the test split.")
    try:
        _semantic_split(spec, spec.train_data, calibration_split)
    except (OSError, ValueError) as exc:
        raise StudyError(f"--prior-correction {calibration_split}: {exc}") from None


def score_prior_corrected(spec: StudySpec, checkpoint: Path, calibration_split: str, limit: int,
                          device: str = "cpu") -> dict[str, Any]:
    """A semantic checkpoint scored on the test split with its class-prior correction, the alpha chosen by
    mIoU on ``calibration_split`` of the *training* data (``ros-amf calibrate semantic``'s procedure and
    alphas; never the test split), so that every arm is compared as it would ship."""
    import torch

    from ros_amf.contract.checkpoint import CheckpointError
    from ros_amf.evaluation.prior import DEFAULT_ALPHAS, best_alpha, prior_bias, recorded_class_weights, score_alphas
    from ros_amf.evaluation.semantic import load_semantic_model, small_ids_of

    if spec.task != "semantic":
        raise StudyError("the class-prior correction applies to semantic studies only.")
    check_calibration_split(spec, calibration_split)
    try:
        model, payload = load_semantic_model(checkpoint)
    except (CheckpointError, ConfigError) as exc:
        raise StudyError(str(exc)) from None
    try:
        weights = recorded_class_weights(payload, model.cfg.num_classes, checkpoint)
    except ValueError as exc:
        raise StudyError(str(exc)) from None
    calibration = _semantic_split(spec, spec.train_data, calibration_split)
    model = model.to(device)
    size = spec.eval_input or model.cfg.input_size
    rows = score_alphas(model, calibration, size, weights, DEFAULT_ALPHAS, small_ids_of(calibration, spec.dataset),
                        device=device)
    alpha = best_alpha(rows)
    model.set_logit_bias(torch.from_numpy(prior_bias(weights, alpha)))
    scored = _score_semantic_model(spec, model, payload, checkpoint, limit, device)
    return {**scored, "alpha": alpha, "calibration_split": calibration_split,
            "calibration": [{"alpha": r["alpha"], "mIoU": r["miou"], "mIoU_S": r["miou_small"]} for r in rows]}


def _score_instance(spec: StudySpec, checkpoint: Path, limit: int, device: str) -> dict[str, Any]:
    from ros_amf.evaluation.instance import evaluate_model, load_instance_model

    root = Path(spec.test_data)
    annotations = root / "annotations" / f"instances_{spec.test_split}.json"
    model, cfg, class_names = load_instance_model(checkpoint)
    report = evaluate_model(model.to(device), class_names, annotations, root / "images" / spec.test_split,
                            spec.eval_input or cfg.input_size, device, limit or None)
    metrics = {name: report["metrics"][key] for name, key in INSTANCE_METRICS.items()}
    return {"metrics": metrics, "per_class": report.get("per_class", {}),
            "class_agnostic": report.get("class_agnostic", {}), "images": report["images"],
            "latency_ms_mean": report["latency_ms_mean"]}


def check_data_roots(spec: StudySpec) -> None:
    """One sentence for a training or test root that is not there, before anything trains."""
    for role, root, split in (("train_data", spec.train_data, spec.train_split),
                              ("test_data", spec.test_data, spec.test_split)):
        root_path = Path(root)
        if spec.task == "instance":
            needed = root_path / "annotations" / f"instances_{split}.json"
            hint = "a COCO-layout folder (make-data writes DIR/coco)"
        else:
            base = root_path / spec.dataset if (root_path / spec.dataset).is_dir() else root_path
            needed = base / ("leftImg8bit" if spec.dataset == "cityscapes" else "") / split
            hint = f"a make-data --out folder or a {spec.dataset} folder"
        if not needed.exists():
            raise StudyError(f"{role} '{root}' has no '{needed}'; point it at {hint} with a '{split}' split.")


# ------------------------------------------------------------------ aggregation


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1; None for a single value)."""
    if not values:
        raise ValueError("mean_sd needs at least one value.")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def paired_difference(baseline: dict[int, float], other: dict[int, float]) -> dict[str, Any]:
    """``other − baseline`` seed by seed over the seeds both have, with mean and sd of those differences.

    Pairing removes what a seed does to both arms alike (data order, augmentation draws); the sd of the
    differences is the spread the claim has to clear."""
    seeds = sorted(set(baseline) & set(other))
    if not seeds:
        raise ValueError("no seed was scored in both arms; nothing to pair.")
    values = [other[s] - baseline[s] for s in seeds]
    mean, sd = mean_sd(values)
    return {"seeds": seeds, "values": values, "mean": mean, "sd": sd, "n": len(values)}


def aggregate(finals: dict[str, dict[int, dict[str, float]]], arms: list[str], metrics: list[str],
              baseline: str) -> dict[str, Any]:
    """``finals[arm][seed][metric]`` (final-checkpoint scores) -> per arm mean/sd/values per metric and,
    for every arm but ``baseline``, the paired difference to it."""
    result: dict[str, Any] = {"baseline": baseline, "metrics": list(metrics), "arms": {}, "differences": {}}
    for arm in arms:
        per_seed = finals.get(arm, {})
        result["arms"][arm] = {}
        for metric in metrics:
            values = {seed: scores[metric] for seed, scores in sorted(per_seed.items())}
            mean, sd = mean_sd(list(values.values())) if values else (None, None)
            result["arms"][arm][metric] = {"mean": mean, "sd": sd, "n": len(values), "values": values}
    for arm in arms:
        if arm == baseline:
            continue
        result["differences"][arm] = {}
        for metric in metrics:
            base = result["arms"][baseline][metric]["values"]
            other = result["arms"][arm][metric]["values"]
            if set(base) & set(other):
                result["differences"][arm][metric] = paired_difference(base, other)
    return result


def _fmt(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(summary: dict[str, Any], digits: int = 3) -> str:
    """Per arm ``mean ± sd (n)``, then per other arm ``arm − baseline`` as ``mean ± sd`` and the per-seed
    differences in seed order. sd is the sample sd over seeds (n − 1)."""
    metrics, baseline = summary["metrics"], summary["baseline"]
    lines = ["| arm | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for arm, per_metric in summary["arms"].items():
        seeds = sorted({s for m in metrics for s in per_metric[m]["values"]})
        cells = [f"{_fmt(c['mean'], digits)} ± {_fmt(c['sd'], digits)}" for c in (per_metric[m] for m in metrics)]
        lines.append(f"| {arm} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    for arm, per_metric in summary["differences"].items():
        cells, seeds = [], []
        for metric in metrics:
            d = per_metric.get(metric)
            if d is None:
                cells.append("-")
                continue
            seeds = d["seeds"]
            each = ", ".join(_fmt(v, digits, signed=True) for v in d["values"])
            cells.append(f"{_fmt(d['mean'], digits, signed=True)} ± {_fmt(d['sd'], digits)} ({each})")
        lines.append(f"| {arm} − {baseline} (paired) | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
