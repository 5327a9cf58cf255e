"""The claims study's bookkeeping (ros_amf.training.study): mean ± sd over seeds, paired differences and the
table, against hand-computed values; the spec checks; run states. Nothing here trains or evaluates a model."""
from pathlib import Path

import pytest
import yaml

from ros_amf.training.study import (DATA_FILE, RECIPE_FILE, StudyError, aggregate, checkpoints_to_score,
                                    load_study_spec, markdown_table, mean_sd, paired_difference, run_data, run_recipe,
                                    run_state, with_budget)

REPO = Path(__file__).resolve().parents[2]

# final scores of a made-up study, seeds 1, 2, 3
FINALS = {
    "host": {1: {"mIoU": 0.70, "mIoU_S": 0.50}, 2: {"mIoU": 0.74, "mIoU_S": 0.52}, 3: {"mIoU": 0.72, "mIoU_S": 0.57}},
    "host_afma": {1: {"mIoU": 0.71, "mIoU_S": 0.55}, 2: {"mIoU": 0.77, "mIoU_S": 0.54}, 3: {"mIoU": 0.72, "mIoU_S": 0.62}},
}


def test_mean_and_sample_sd_by_hand():
    mean, sd = mean_sd([0.70, 0.74, 0.72])
    assert mean == pytest.approx(0.72)
    # deviations -0.02, +0.02, 0: sum of squares 0.0008 over n - 1 = 2 -> 0.0004 -> sd 0.02
    assert sd == pytest.approx(0.02)
    assert mean_sd([0.5]) == (0.5, None)


def test_paired_difference_by_hand():
    d = paired_difference({1: 0.70, 2: 0.74, 3: 0.72}, {1: 0.71, 2: 0.77, 3: 0.72})
    assert d["seeds"] == [1, 2, 3]
    assert d["values"] == pytest.approx([0.01, 0.03, 0.0])
    # mean 0.04 / 3; deviations -0.00333, +0.01667, -0.01333: squares sum 0.000466667 / 2 -> sd 0.0152753
    assert d["mean"] == pytest.approx(0.0133333, abs=1e-6)
    assert d["sd"] == pytest.approx(0.0152753, abs=1e-6)


def test_paired_difference_uses_only_seeds_both_arms_have():
    d = paired_difference({1: 0.5, 2: 0.6, 3: 0.9}, {2: 0.7, 3: 0.8, 4: 0.1})
    assert d["seeds"] == [2, 3] and d["values"] == pytest.approx([0.1, -0.1]) and d["mean"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        paired_difference({1: 0.5}, {2: 0.5})


def test_aggregate_and_table():
    summary = aggregate(FINALS, ["host", "host_afma"], ["mIoU", "mIoU_S"], "host")
    host = summary["arms"]["host"]["mIoU_S"]
    # 0.50, 0.52, 0.57: mean 0.53; deviations -0.03, -0.01, +0.04: 0.0026 / 2 = 0.0013 -> sd 0.0360555
    assert host["mean"] == pytest.approx(0.53) and host["sd"] == pytest.approx(0.0360555, abs=1e-6)
    assert host["n"] == 3 and host["values"] == {1: 0.50, 2: 0.52, 3: 0.57}
    diff = summary["differences"]["host_afma"]["mIoU_S"]
    # +0.05, +0.02, +0.05: mean 0.04, sd sqrt((1e-4 + 4e-4 + 1e-4) / 2) = 0.0173205
    assert diff["values"] == pytest.approx([0.05, 0.02, 0.05])
    assert diff["mean"] == pytest.approx(0.04) and diff["sd"] == pytest.approx(0.0173205, abs=1e-6)
    assert "host" not in summary["differences"]
    table = markdown_table(summary).splitlines()
    assert table[0] == "| arm | seeds | mIoU | mIoU_S |"
    assert table[2] == "| host | 1, 2, 3 | 0.720 ± 0.020 | 0.530 ± 0.036 |"
    assert table[4] == ("| host_afma − host (paired) | 1, 2, 3 | +0.013 ± 0.015 (+0.010, +0.030, +0.000) "
                        "| +0.040 ± 0.017 (+0.050, +0.020, +0.050) |")


def test_shipped_specs_load_and_their_arms_differ_only_in_the_switch_under_study():
    switches = {"semantic": {"afma"}, "instance": {"context", "lite_bifpn", "fem"}}
    specs = sorted((REPO / "models" / "study").glob("*.yaml"))
    assert len(specs) >= 3
    for path in specs:
        spec = load_study_spec(path)
        assert len(spec.seeds) >= 3
        recipes = [run_recipe(spec, arm, spec.seeds[0]) for arm in spec.arms]
        assert all(r["train"] == recipes[0]["train"] for r in recipes), path   # one recipe for every arm
        base = recipes[0]["model"]
        for recipe in recipes[1:]:
            differing = {k for k in set(base) | set(recipe["model"]) if base.get(k) != recipe["model"].get(k)}
            assert differing and differing <= switches[spec.task], (path, differing)


def _spec(tmp_path, **changes):
    text = {"task": "semantic", "arms": [{"name": "a", "config": str(REPO / "models/fpn_effl0.yaml")},
                                         {"name": "b", "config": str(REPO / "models/fpn_afma_effl0.yaml")}],
            "seeds": [1, 2, 3], "budget": {"iterations": 30, "batch_size": 2}, "eval_every": 10,
            "train_data": str(tmp_path), "test_data": str(tmp_path), **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def test_spec_errors_are_one_sentence(tmp_path):
    with pytest.raises(StudyError, match="at least 3 distinct seeds"):
        load_study_spec(_spec(tmp_path, seeds=[1, 2]))
    with pytest.raises(StudyError, match="train.seed is set by the study"):
        load_study_spec(_spec(tmp_path, train={"seed": 4}))
    with pytest.raises(StudyError, match="metric 'AP50' is not reported for semantic"):
        load_study_spec(_spec(tmp_path, metrics=["AP50"]))
    with pytest.raises(StudyError, match="does not exist"):
        spec = load_study_spec(_spec(tmp_path, arms=[{"name": "a", "config": "nowhere.yaml"},
                                                     {"name": "b", "config": "nowhere2.yaml"}]))
        run_recipe(spec, spec.arms[0], 1)


def test_run_states_and_the_curve_checkpoints(tmp_path):
    spec = load_study_spec(_spec(tmp_path))
    recipe = run_recipe(spec, spec.arms[1], 2)
    assert recipe["train"]["seed"] == 2 and recipe["train"]["max_iters"] == 30
    assert recipe["train"]["snapshot_every"] == 10 and recipe["model"]["afma"] is True
    run = tmp_path / "run"
    assert run_state(run, recipe) == "new"
    run.mkdir()
    (run / RECIPE_FILE).write_text(yaml.safe_dump(recipe))
    (run / "last.pt").write_bytes(b"")
    assert run_state(run, recipe) == "resume"
    (run / "model.pt").write_bytes(b"")
    (run / "summary.json").write_text('{"iterations": 20}')     # stopped early: not done
    assert run_state(run, recipe) == "resume"
    (run / "summary.json").write_text('{"iterations": 30}')
    assert run_state(run, recipe) == "done"
    other = run_recipe(with_budget(spec, iterations=40), spec.arms[1], 2)
    with pytest.raises(StudyError, match="another recipe .*max_iters"):
        run_state(run, other)
    # a run records the data it was trained on: another study sharing the folder cannot take it as its own
    data = run_data(spec)
    assert run_state(run, recipe, data) == "done"          # recorded nothing (an older run): taken as it is
    (run / DATA_FILE).write_text(yaml.safe_dump(data))
    assert run_state(run, recipe, data) == "done"
    with pytest.raises(StudyError, match="but this study trains on"):
        run_state(run, recipe, {**data, "train_split": "val"})
    with pytest.raises(StudyError, match="snapshot_000010.pt' is missing"):
        checkpoints_to_score(run, 30, 10)
    for it in (10, 20):
        (run / f"snapshot_{it:06d}.pt").write_bytes(b"")
    assert checkpoints_to_score(run, 30, 10) == [(10, run / "snapshot_000010.pt"), (20, run / "snapshot_000020.pt"),
                                                 (30, run / "model.pt")]


def test_a_run_is_claimed_by_one_live_worker_and_a_dead_workers_claim_is_taken_over(tmp_path):
    import os
    import subprocess
    import sys

    from ros_amf.training.study import CLAIM_FILE, claim_run, release_run

    from ros_amf.training.study import _start_time

    run = tmp_path / "arm" / "seed1"
    assert claim_run(run) and claim_run(run)              # taken, and taking it again is a no-op
    mine = f"{os.getpid()} {_start_time(os.getpid())}"
    assert (run / CLAIM_FILE).read_text() == mine
    release_run(run)
    assert not (run / CLAIM_FILE).exists()
    # a live other worker holds it: passed over, and its claim is left alone (old claims hold the pid alone)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for claim in (f"{other.pid} {_start_time(other.pid)}", str(other.pid)):
            (run / CLAIM_FILE).write_text(claim)
            assert not claim_run(run)
            release_run(run)
            assert (run / CLAIM_FILE).read_text() == claim
        # the same pid started at another time is another process (pids are reused after a restart)
        (run / CLAIM_FILE).write_text(f"{other.pid} {_start_time(other.pid) + 1}")
        assert claim_run(run) and (run / CLAIM_FILE).read_text() == mine
        (run / CLAIM_FILE).write_text(str(other.pid))
    finally:
        other.kill()
        other.wait()
    # that worker is gone (killed, session ended): the run is taken over and can resume
    assert claim_run(run)
    assert (run / CLAIM_FILE).read_text() == mine
    # an empty claim is a worker that just won the race and is writing it: held, unless it is old
    (run / CLAIM_FILE).write_text("")
    assert not claim_run(run)
    os.utime(run / CLAIM_FILE, (0, 0))
    assert claim_run(run) and (run / CLAIM_FILE).read_text() == mine


def test_table4_study_shares_claim_a_runs():
    """Claim (b) reuses claim (a)'s runs for rows 1 and 5: same arm names, recipes, seeds, budget and test."""
    a = load_study_spec(REPO / "models" / "study" / "sparseinst_vs_amf.yaml")
    b = load_study_spec(REPO / "models" / "study" / "table4_effl0.yaml")
    assert [arm.name for arm in b.arms][::4] == [arm.name for arm in a.arms]
    for field_name in ("seeds", "budget", "train", "train_data", "test_data", "test_split", "eval_every",
                       "eval_input", "test_limit", "curve_limit"):
        assert getattr(a, field_name) == getattr(b, field_name), field_name
    for arm_a, arm_b in zip(a.arms, b.arms[::4]):
        for seed in a.seeds:
            assert run_recipe(a, arm_a, seed) == run_recipe(b, arm_b, seed)


def test_instance_pretraining_spec_shares_claim_a_imagenet_run():
    a = load_study_spec(REPO / "models" / "study" / "sparseinst_vs_amf.yaml")
    p = load_study_spec(REPO / "models" / "study" / "pretraining" / "instance_pretrained_vs_scratch.yaml")
    imagenet = run_recipe(p, {arm.name: arm for arm in p.arms}["amf_sparseinst"], 101)
    assert imagenet == run_recipe(a, {arm.name: arm for arm in a.arms}["amf_sparseinst"], 101)
    scratch = run_recipe(p, {arm.name: arm for arm in p.arms}["scratch"], 101)
    differing = {k for k, v in scratch["model"].items() if imagenet["model"].get(k) != v}
    assert differing == {"backbone_weights"} and scratch["model"]["backbone_weights"] is None
