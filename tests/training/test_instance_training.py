"""End-to-end: a tiny SparseInst overfits a handful of synthetic images (real reader, loop, COCO AP),
and a training run killed mid-way resumes with exactly the same loss curve."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ros_amf.contract.checkpoint import save_checkpoint
from ros_amf.contract.config import to_dict
from ros_amf.evaluation.instance import evaluate_model
from ros_amf.apps.eval_instance import main as eval_main
from ros_amf.modeling.sparseinst.model import InstanceModelConfig
from ros_amf.runtime.preprocess import InputSize
from ros_amf.training.config import TrainConfig
from ros_amf.training.fit import fit
from ros_amf.training.instance import InstanceTask, open_dataset

TINY_MODEL = dict(backbone_depth=18, backbone_width=8, encoder_channels=32, decoder_channels=32, decoder_convs=2,
                  num_masks=10, expand_dim=64, kernel_dim=16, head_norm="gn", context="simam_aspp",
                  lite_bifpn=True, fem=True, aspp_dropout=0.0)


def write_shapes_dataset(root: Path, images: int = 4, size: int = 64, seed: int = 0) -> Path:
    """COCO-layout set of noisy images with squares (class 'box') and discs (class 'disc')."""
    rng = np.random.default_rng(seed)
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "disc"}]}
    for image_id in range(1, images + 1):
        image = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
        for k in range(2):
            mask = np.zeros((size, size), np.uint8)
            cx, cy = (16 + 32 * k) + rng.integers(-4, 5), rng.integers(18, size - 18)
            radius = int(rng.integers(8, 13))
            category = int(rng.integers(1, 3))
            if category == 1:
                cv2.rectangle(mask, (int(cx - radius), int(cy - radius)), (int(cx + radius), int(cy + radius)), 1, -1)
            else:
                cv2.circle(mask, (int(cx), int(cy)), radius, 1, -1)
            image[mask > 0] = (230, 60, 40) if category == 1 else (40, 200, 230)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            polygon = [float(v) for point in contours[0][:, 0] for v in point]
            x, y, w, h = cv2.boundingRect(mask)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": category, "segmentation": [polygon], "iscrowd": 0,
                                        "area": float(mask.sum()), "bbox": [x, y, w, h]})
        name = f"{image_id:04d}.png"
        cv2.imwrite(str(root / "images" / "train" / name), image[:, :, ::-1])
        coco["images"].append({"id": image_id, "file_name": name, "height": size, "width": size})
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    return root


def test_tiny_model_overfits_synthetic_images_to_high_ap(tmp_path):
    torch.set_num_threads(1)  # more threads only contend on a shared 2-core machine
    root = write_shapes_dataset(tmp_path / "shapes")
    dataset, class_names = open_dataset("coco", str(root), "train")
    cfg = TrainConfig(lr=3e-3, batch_size=4, max_iters=60, warmup_iters=20, milestones=(50,), min_sizes=(64,),
                      max_size=64, hflip=False, checkpoint_every=1000, log_every=10, workers=0, seed=0)
    task = InstanceTask(InstanceModelConfig(**TINY_MODEL), dataset, class_names)
    result = fit(task, cfg, tmp_path / "run", device="cpu", progress=False)
    report = evaluate_model(result.model, class_names, root / "annotations" / "instances_train.json",
                            root / "images" / "train", InputSize(64, 64))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert report["metrics"]["AP50"] >= 0.9, report["metrics"]
    assert report["metrics"]["AP"] >= 0.5, report["metrics"]
    # the same model through the shipped format (fp16 checkpoint) and the `ros-amf eval instance` command
    save_checkpoint(tmp_path / "tiny.pt", task="instance", model_config=to_dict(task.model_config),
                    class_names=class_names, state_dict=result.model.state_dict(), half=True)
    code = eval_main(["--checkpoint", str(tmp_path / "tiny.pt"), "--data", str(root), "--split", "train",
                      "--short-side", "64", "--max-side", "64", "--device", "cpu", "--out", str(tmp_path / "eval")])
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert code == 0 and written["images"] == 4 and written["latency_ms_mean"] > 0
    assert written["metrics"]["AP50"] >= 0.9
    assert set(written["per_class"]) == set(class_names) and written["class_agnostic"]["AP50"] >= 0.9
    assert set(written["confusion_iou50"]) == set(class_names)
    single = json.loads((tmp_path / "eval" / "results_segm.json").read_text())
    assert single[0]["segmentation"]["counts"] and written["labels_per_mask"] == 1
    # two labels per mask: every mask also reported under its runner-up class, at a lower score
    common_args = ["--checkpoint", str(tmp_path / "tiny.pt"), "--data", str(root), "--split", "train",
                   "--short-side", "64", "--max-side", "64", "--device", "cpu"]
    assert eval_main(common_args + ["--labels-per-mask", "2", "--out", str(tmp_path / "eval2")]) == 0
    double = json.loads((tmp_path / "eval2" / "results_segm.json").read_text())
    assert json.loads((tmp_path / "eval2" / "metrics.json").read_text())["labels_per_mask"] == 2
    assert len(double) > len(single)
    assert {(d["image_id"], d["category_id"], d["score"]) for d in single} <= \
        {(d["image_id"], d["category_id"], d["score"]) for d in double}
    assert eval_main(common_args + ["--labels-per-mask", "0"]) == 2


def _train_command(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ros_amf.apps.cli", "train", "instance", "--config", str(config), "--data", str(data),
            "--out", str(out), "--device", "cpu", "--threads", "1", "--no-progress", "--val-split", "", *extra]


LOSS_KEYS = ("loss", "loss_cls", "loss_dice", "loss_mask", "loss_obj", "lr", "short_side")


def _rows(run: Path) -> list[dict]:
    """Every complete line of metrics.jsonl (the run may be writing the next one right now)."""
    path = run / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def _losses(run: Path) -> dict[int, dict]:
    return {row["iter"]: {k: row[k] for k in LOSS_KEYS} for row in _rows(run)}


def _assert_on_curve(rows: list[dict], full: dict[int, dict], when: str) -> None:
    for row in rows:
        for key in LOSS_KEYS:
            assert row[key] == pytest.approx(full[row["iter"]][key], rel=1e-5, abs=1e-7), (when, row["iter"], key)


@pytest.mark.slow
def test_run_killed_at_random_iterations_resumes_on_the_same_loss_curve_each_time(tmp_path):
    """SIGKILL at three iterations drawn from a fixed seed: the killed run, resumed after each kill,
    logs exactly the rows of an uninterrupted run (dropout on, two input sizes, a worker process)."""
    total, every = 12, 2
    root = write_shapes_dataset(tmp_path / "shapes", images=6)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": dict(TINY_MODEL, aspp_dropout=0.1),  # dropout on: the restored RNG state matters
        "train": {"lr": 2e-3, "batch_size": 2, "max_iters": total, "warmup_iters": 2, "milestones": [9],
                  "min_sizes": [64, 96], "max_size": 96, "checkpoint_every": every, "log_every": 1,
                  "workers": 1}}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train_command(config, root, tmp_path / "full"), check=True, env=env, capture_output=True)
    full = _losses(tmp_path / "full")
    assert sorted(full) == list(range(1, total + 1))
    # after row `every + 1` a checkpoint exists; the last kill leaves iterations to run after it
    kill_points = sorted(random.Random(21).sample(range(every + 1, total - 1), 3))
    run = tmp_path / "killed"
    for number, kill_at in enumerate(kill_points):
        resume = ["--resume"] if number else []
        process = subprocess.Popen(_train_command(config, root, run, *resume), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 200
        while time.time() < deadline and process.poll() is None and max(_losses(run), default=0) < kill_at:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed at {kill_at}"
        rows = _rows(run)
        assert max(row["iter"] for row in rows) >= kill_at
        _assert_on_curve(rows, full, f"killed at {kill_at}")
    subprocess.run(_train_command(config, root, run, "--resume"), check=True, env=env, capture_output=True)
    rows = _rows(run)
    assert [row["iter"] for row in rows] == list(range(1, total + 1))   # no gap, no duplicate
    _assert_on_curve(rows, full, "after the last resume")


def test_resume_without_checkpoint_says_what_to_do(tmp_path, capsys):
    from ros_amf.apps.train import main_instance as main
    root = write_shapes_dataset(tmp_path / "shapes", images=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {"max_iters": 2, "workers": 0}}))
    code = main(["--config", str(config), "--data", str(root), "--out", str(tmp_path / "none"), "--resume",
                 "--no-progress", "--device", "cpu"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_crop_trains_on_a_native_scale_window_with_consistent_targets(tmp_path):
    from ros_amf.data.transforms import AugmentedDataset
    from ros_amf.training.fit import augmentation_of
    root = write_shapes_dataset(tmp_path / "shapes", images=2, size=96)
    dataset, _ = open_dataset("coco", str(root), "train")
    cfg = TrainConfig(min_sizes=(96,), max_size=96, crop=(48, 64), hflip=False)
    samples = AugmentedDataset(dataset, augmentation_of(cfg), cfg.seed)
    seen_boxes = 0
    for epoch in range(4):
        sample = samples[(0, epoch, 96)]
        assert sample["image"].shape == (48, 64, 3)
        assert sample["masks"].shape[1:] == (48, 64) and len(sample["masks"]) == len(sample["classes"])
        for mask, box in zip(sample["masks"], sample["boxes"]):
            ys, xs = np.nonzero(mask)
            assert ys.size > 0  # instances cropped away are dropped, not kept empty
            assert (box[0], box[1]) == (xs.min(), ys.min())
            seen_boxes += 1
        # the window is cut from the image at native scale: its pixels appear in the full image
        full = dataset[0]["image"]
        matches = [(y, x) for y in range(0, 96 - 48 + 1) for x in range(0, 96 - 64 + 1)
                   if np.array_equal(full[y:y + 48, x:x + 64], sample["image"])]
        assert matches
    assert seen_boxes > 0


@pytest.mark.parametrize("crop", [[320], [0, 320]])
def test_bad_crop_in_config_is_one_clear_error(tmp_path, crop):
    from ros_amf.contract.config import ConfigError
    from ros_amf.training.config import load_run_config
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {"crop": crop}}))
    with pytest.raises(ConfigError, match="train.crop must be"):
        load_run_config(str(config), "instance")
