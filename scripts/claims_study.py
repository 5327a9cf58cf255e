#!/usr/bin/env python3
"""Run a claims study: every (arm, seed) trained under one budget, scored on a held-out test split.

    nice -n 10 python scripts/claims_study.py models/study/afma_vs_fpn_effl0.yaml
    nice -n 10 python scripts/claims_study.py models/study/afma_vs_fpn_effl0.yaml --report-only

The spec (models/study/*.yaml, ros_amf.training.study.StudySpec) names the arms (model configs), the
seeds, the budget, the common train: recipe, the training data and the test split. Each run is one
``ros-amf train`` process in OUT/<arm>/seed<k>/ (the recipe it used is OUT/<arm>/seed<k>/study_recipe.yaml)
with an fp16 snapshot every ``eval_every`` iterations; each snapshot and the final model are scored on
the test split with the project's evaluators (scores cached in OUT/<arm>/seed<k>/test/).

Re-running is cheap: finished runs are skipped, an interrupted one continues from its last.pt
(--resume reproduces the uninterrupted curve), cached scores are reused. A run folder made with another
recipe is refused rather than mixed into the table. OUT gets SPEC.json (every number), SPEC.md (mean ± sd
per arm, paired differences arm − baseline with the per-seed values) and SPEC_curves.png, SPEC being the
spec's file name: studies that share runs (one folder) keep their own tables.
Runs go seed by seed, so a study stopped half way already has complete pairs.

Two cores, two workers: start the same command twice (one thread each). A worker claims a run before
training it (OUT/<arm>/seed<k>/.claimed_by holds its pid and start time) and passes over runs another live worker holds;
each prints the table of what was finished when it ended, and --report-only afterwards tabulates all.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ros_amf.contract.input_size import InputSize
from ros_amf.training.study import (DATA_FILE, RECIPE_FILE, StudyError, StudySpec, aggregate,
                                    check_calibration_split, check_data_roots, checkpoints_to_score, claim_run,
                                    load_study_spec, markdown_table, release_run, run_data, run_recipe, run_state,
                                    score_checkpoint, score_prior_corrected, with_budget)


def size_hw(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size HxW such as 224x320") from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, help="study YAML (models/study/*.yaml)")
    p.add_argument("--out", type=Path, help="study folder (default: runs/study/<spec name>)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: score and tabulate the runs that exist (a study in progress)")
    p.add_argument("--prior-correction", metavar="SPLIT", default=None,
                   help="semantic studies: also score every final model with the class-prior correction "
                        "(ros-amf calibrate semantic), alpha chosen on SPLIT of the training data; writes "
                        "SPEC_prior_corrected.{md,json}")
    p.add_argument("--device", default=None, help="training device, cpu or cuda (default: cuda when available); "
                                                   "scoring runs on the same")
    g = p.add_argument_group("overrides of the spec (for smoke tests; a changed budget needs its own --out)")
    g.add_argument("--seeds", type=int, nargs="+")
    g.add_argument("--arms", nargs="+", help="only these arms (names from the spec; the baseline is kept)")
    g.add_argument("--iterations", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--crop", type=size_hw, help="training crop HxW (multiples of 32)")
    g.add_argument("--short-side", type=int, nargs="+", help="training short side(s), train.min_sizes")
    g.add_argument("--threads", type=int)
    g.add_argument("--eval-every", type=int)
    g.add_argument("--test-limit", type=int, help="score final checkpoints on the first N test frames (0 = all)")
    g.add_argument("--curve-limit", type=int, help="score snapshots on the first N test frames (0 = test-limit)")
    g.add_argument("--eval-input", type=size_hw, metavar="SHORTxMAXLONG",
                   help="network input when scoring, e.g. 240x320 (default: the spec's, else each model's)")
    return p


def apply_overrides(spec: StudySpec, args: argparse.Namespace) -> StudySpec:
    if args.arms:
        unknown = sorted(set(args.arms) - {a.name for a in spec.arms})
        if unknown:
            raise StudyError(f"--arms: '{unknown[0]}' is not an arm of {args.spec}; "
                             f"its arms are {[a.name for a in spec.arms]}.")
    eval_input = None if args.eval_input is None else \
        {"short_side": args.eval_input[0], "max_long_side": args.eval_input[1]}
    spec = with_budget(spec, iterations=args.iterations, batch_size=args.batch_size,
                       crop=list(args.crop) if args.crop else None,
                       short_sides=args.short_side, threads=args.threads, seeds=args.seeds,
                       eval_every=args.eval_every, test_limit=args.test_limit, curve_limit=args.curve_limit,
                       eval_input=eval_input)
    if args.arms:
        keep = set(args.arms) | {spec.baseline_arm}
        spec.baseline = spec.baseline_arm
        spec.arms = tuple(a for a in spec.arms if a.name in keep)
    return spec


def train_command(spec: StudySpec, run_dir: Path, resume: bool, device: str | None) -> list[str]:
    command = [sys.executable, "-m", "ros_amf.apps.cli", "train", spec.task, "--config", str(run_dir / RECIPE_FILE),
               "--data", spec.train_data, "--split", spec.train_split, "--val-split", "", "--out", str(run_dir),
               "--threads", str(spec.budget.threads), "--no-progress"]
    if spec.task == "semantic":
        command += ["--dataset", spec.dataset]
    if device:
        command += ["--device", device]
    return command + (["--resume"] if resume else [])


def last_logged_seconds(run_dir: Path) -> float | None:
    """Training-loop seconds (summed over resumes) from the last metrics.jsonl row."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(rows[-1]).get("seconds") if rows else None


def train_run(spec: StudySpec, run_dir: Path, recipe: dict, label: str, device: str | None) -> None:
    state = run_state(run_dir, recipe, run_data(spec))
    if state == "done":
        print(f"{label}: finished earlier, skipped")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RECIPE_FILE).write_text(yaml.safe_dump(recipe, sort_keys=False))
    (run_dir / DATA_FILE).write_text(yaml.safe_dump(run_data(spec), sort_keys=False))
    command = train_command(spec, run_dir, state == "resume", device)
    print(f"{label}: training{' (resuming last.pt)' if state == 'resume' else ''} ...", flush=True)
    started = time.monotonic()
    try:
        with open(run_dir / "train.log", "a") as log:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    finally:   # an interrupted run's time counts too: the table reports the total over resumes
        wall = time.monotonic() - started
        times = _read_json(run_dir / "study_times.json") or {"train_wall_seconds": 0.0, "score_seconds": 0.0}
        times["train_wall_seconds"] += wall
        times["train_loop_seconds"] = last_logged_seconds(run_dir)
        (run_dir / "study_times.json").write_text(json.dumps(times, indent=2))
    if code != 0:
        tail = "\n".join((run_dir / "train.log").read_text().splitlines()[-5:])
        raise StudyError(f"{label}: training failed (exit {code}); the end of {run_dir / 'train.log'}:\n{tail}")
    print(f"{label}: trained in {wall / 60:.1f} min (process wall time)", flush=True)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def score_run(spec: StudySpec, run_dir: Path, label: str, device: str) -> list[dict]:
    """Curve points [{iteration, metrics, ...}] of a finished run, scoring what is not cached yet."""
    iterations = spec.budget.iterations
    points = []
    scored = 0.0
    for iteration, checkpoint in checkpoints_to_score(run_dir, iterations, spec.eval_every):
        final = iteration == iterations
        limit = spec.test_limit if final or not spec.curve_limit else spec.curve_limit
        key = score_key(spec, checkpoint, limit)
        cache = run_dir / "test" / f"iter_{iteration:06d}.json"
        cached = _read_json(cache)
        if cached is None or cached.get("key") != key:
            tic = time.monotonic()
            cached = {"key": key, "iteration": iteration, **score_checkpoint(spec, checkpoint, limit, device)}
            scored += time.monotonic() - tic
            cache.parent.mkdir(exist_ok=True)
            cache.write_text(json.dumps(cached, indent=2))
        points.append(cached)
    if scored:
        times = _read_json(run_dir / "study_times.json") or {"train_wall_seconds": 0.0, "score_seconds": 0.0}
        times["score_seconds"] = times.get("score_seconds", 0.0) + scored
        (run_dir / "study_times.json").write_text(json.dumps(times, indent=2))
        final = points[-1]["metrics"]
        print(f"{label}: scored {len(points)} checkpoints in {scored / 60:.1f} min; final "
              + " ".join(f"{m}={final[m]:.3f}" for m in spec.metric_names), flush=True)
    return points


def score_key(spec: StudySpec, checkpoint: Path, limit: int, **extra) -> dict:
    """What a cached score depends on besides the weights (the run folder fixes those)."""
    stat = checkpoint.stat()
    return {"checkpoint": checkpoint.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "test_data": spec.test_data, "test_split": spec.test_split,
            "limit": limit, "eval_input": None if spec.eval_input is None else
            [spec.eval_input.short_side, spec.eval_input.max_long_side], **extra}


def prior_corrected_final(spec: StudySpec, run_dir: Path, split: str, label: str, device: str) -> dict:
    """The final model's test scores with the class-prior correction chosen on ``split`` (cached)."""
    checkpoint = run_dir / "model.pt"
    key = score_key(spec, checkpoint, spec.test_limit, calibration_data=spec.train_data, calibration_split=split)
    cache = run_dir / "test" / f"prior_corrected_{split}.json"
    cached = _read_json(cache)
    if cached is None or cached.get("key") != key:
        tic = time.monotonic()
        cached = {"key": key, **score_prior_corrected(spec, checkpoint, split, spec.test_limit, device)}
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps(cached, indent=2))
        print(f"{label}: prior-corrected (alpha {cached['alpha']:g}, chosen on '{split}') in "
              f"{(time.monotonic() - tic) / 60:.1f} min: "
              + " ".join(f"{m}={cached['metrics'][m]:.3f}" for m in spec.metric_names), flush=True)
    return cached


def plot_curves(spec: StudySpec, curves: dict[str, dict[int, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")   # files only, no display
    import matplotlib.pyplot as plt

    metrics = spec.metric_names
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for a, arm in enumerate(curves):
        for s, (seed, points) in enumerate(sorted(curves[arm].items())):
            for ax, metric in zip(axes[0], metrics):
                ax.plot([p["iteration"] for p in points], [p["metrics"][metric] for p in points],
                        color=colours(a % 10), marker="o", markersize=3, linewidth=1.2,
                        linestyle=("-", "--", ":", "-.")[s % 4],
                        label=f"{arm} seed {seed}")
    for ax, metric in zip(axes[0], metrics):
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{metric} ({spec.test_split} of {Path(spec.test_data).name})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    budget = spec.budget
    fig.suptitle(f"{spec.claim or 'claims study'}: {budget.iterations} it x batch {budget.batch_size}"
                 f"{'' if budget.crop is None else f', crop {budget.crop[0]}x{budget.crop[1]}'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_time_table(runs: list[dict]) -> str:
    """Minutes per run: the training loop summed over resumes (from metrics.jsonl), the training processes that
    exited (start-up and class counting included; a worker killed mid-run never records its part, so this can
    be the smaller figure), scoring."""
    lines = ["| arm | seed | train loop min | train processes min (exited ones) | scoring min |",
             "|---|---|---|---|---|"]
    for run in runs:
        t = run["times"] or {}
        cells = [t.get("train_loop_seconds"), t.get("train_wall_seconds"), t.get("score_seconds")]
        lines.append(f"| {run['arm']} | {run['seed']} | "
                     + " | ".join("-" if c is None else f"{c / 60:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = apply_overrides(load_study_spec(args.spec), args)
        check_data_roots(spec)
        if args.prior_correction and spec.task != "semantic":
            raise StudyError(f"--prior-correction applies to semantic studies; {args.spec} is an {spec.task} study.")
        if args.prior_correction:
            check_calibration_split(spec, args.prior_correction)   # before hours of training, not after
        out = args.out or Path("runs") / "study" / args.spec.stem
        # every recipe first: a bad arm config is reported before hours of training
        plan = [(seed, arm, out / arm.name / f"seed{seed}", run_recipe(spec, arm, seed))
                for seed in spec.seeds for arm in spec.arms]
        for _, _, run_dir, recipe in plan:
            run_state(run_dir, recipe, run_data(spec))   # refuses folders of another recipe or data up front
    except (StudyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    if spec.budget.threads:
        torch.set_num_threads(spec.budget.threads)   # scoring runs in this process
    # score where training ran: cuda when the trainer would pick it (its default), unless told cpu
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    curves: dict[str, dict[int, list[dict]]] = {arm.name: {} for arm in spec.arms}
    corrected: dict[str, dict[int, dict]] = {arm.name: {} for arm in spec.arms}
    runs = []

    def tabulate(label: str, seed: int, arm, run_dir: Path) -> None:
        curves[arm.name][seed] = score_run(spec, run_dir, label, device)
        if args.prior_correction:
            corrected[arm.name][seed] = prior_corrected_final(spec, run_dir, args.prior_correction, label, device)
        runs.append({"arm": arm.name, "seed": seed, "run_dir": str(run_dir), "config": arm.config,
                     "times": _read_json(run_dir / "study_times.json"), "curve": curves[arm.name][seed]})
    elsewhere = []   # runs another worker was training: in the table if they finished by the end of this one
    try:
        for n, (seed, arm, run_dir, recipe) in enumerate(plan, 1):
            label = f"[{n}/{len(plan)}] {arm.name} seed {seed}"
            if args.report_only:
                if run_state(run_dir, recipe, run_data(spec)) != "done":
                    print(f"{label}: not finished, left out")
                    continue
            elif not claim_run(run_dir):
                print(f"{label}: another worker is training it, left to that worker", flush=True)
                elsewhere.append((label, seed, arm, run_dir, recipe))
                continue
            else:
                try:
                    train_run(spec, run_dir, recipe, label, args.device)
                finally:
                    release_run(run_dir)
            tabulate(label, seed, arm, run_dir)
        for label, seed, arm, run_dir, recipe in elsewhere:
            if run_state(run_dir, recipe, run_data(spec)) == "done":
                tabulate(label, seed, arm, run_dir)
            else:
                print(f"{label}: still training in another worker, left out of this table (the last worker to "
                      "finish writes the whole one; or run again with --report-only)")
    except (StudyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue (finished runs are kept, an unfinished "
              "one resumes from its last.pt).", file=sys.stderr)
        return 130
    order = [(seed, arm.name) for seed, arm, _, _ in plan]
    runs.sort(key=lambda run: order.index((run["seed"], run["arm"])))
    finals = {arm: {seed: points[-1]["metrics"] for seed, points in per_seed.items()}
              for arm, per_seed in curves.items()}
    if not any(finals.values()):
        print("no finished runs to tabulate yet.")
        return 0
    summary = aggregate(finals, [a.name for a in spec.arms], list(spec.metric_names), spec.baseline_arm)
    table = markdown_table(summary)
    budget = spec.budget
    header = (f"{spec.claim}\n\n" if spec.claim else "") + (
        f"Budget: {budget.iterations} iterations x batch {budget.batch_size}, crop "
        f"{'none' if budget.crop is None else f'{budget.crop[0]}x{budget.crop[1]}'}, {budget.threads} threads; "
        f"seeds {', '.join(map(str, spec.seeds))}; test: {spec.test_data} split '{spec.test_split}'"
        f"{f' (first {spec.test_limit} frames)' if spec.test_limit else ''}. Mean ± sample sd over seeds; "
        f"paired rows: arm − {spec.baseline_arm} per seed, mean ± sd (per-seed values in seed order).\n")
    timing = run_time_table(runs)
    json_path, table_path, curves_path = (out / f"{args.spec.stem}{suffix}"
                                          for suffix in (".json", ".md", "_curves.png"))
    table_path.write_text(header + "\n" + table + "\n\n" + timing + "\n")
    plot_curves(spec, curves, curves_path)
    resolved = {k: v for k, v in vars(spec).items()}
    json_path.write_text(json.dumps({
        "spec": str(args.spec), "resolved_spec": json.loads(json.dumps(resolved, default=_plain)),
        "summary": summary, "runs": runs}, indent=2, default=_plain))
    print()
    print(header)
    print(table)
    print()
    print(timing)
    if args.prior_correction:
        write_prior_corrected(spec, args, out, corrected, header)
    print(f"\nwrote {json_path}, {table_path}, {curves_path} "
          f"({(time.monotonic() - started) / 60:.1f} min this invocation)")
    return 0


def write_prior_corrected(spec: StudySpec, args: argparse.Namespace, out: Path, corrected: dict, header: str) -> None:
    """SPEC_prior_corrected.{md,json}: the final models as they would ship (class-prior correction on)."""
    finals = {arm: {seed: score["metrics"] for seed, score in per_seed.items()} for arm, per_seed in corrected.items()}
    summary = aggregate(finals, [a.name for a in spec.arms], list(spec.metric_names), spec.baseline_arm)
    alphas = "\n".join(f"| {arm} | {seed} | {score['alpha']:g} | "
                       + ", ".join(f"{row['alpha']:g}: {row['mIoU']:.3f}" for row in score["calibration"]) + " |"
                       for arm, per_seed in corrected.items() for seed, score in sorted(per_seed.items()))
    text = (header + f"\nFinal models with the class-prior correction (ros-amf calibrate semantic), alpha chosen per "
            f"run by mIoU on split '{args.prior_correction}' of {spec.train_data} (never the test split):\n\n"
            + markdown_table(summary) + "\n\n| arm | seed | alpha | calibration mIoU by alpha |\n|---|---|---|---|\n"
            + alphas + "\n")
    stem = f"{args.spec.stem}_prior_corrected"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps({"spec": str(args.spec), "calibration_split": args.prior_correction,
                                                  "summary": summary, "runs": corrected}, indent=2, default=_plain))
    print("\n" + text + f"\nwrote {out / (stem + '.md')}, {out / (stem + '.json')}")


def _plain(value):
    """JSON for the spec's dataclasses and tuples."""
    if isinstance(value, InputSize) or hasattr(value, "__dataclass_fields__"):
        return vars(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
