"""A new user's own data: any COCO instances JSON (``--ann/--images``) and a semantic image + label-PNG
folder with a class table (``--images/--labels/--classes``) train a few iterations and evaluate; results
land in --out or runs/, never in models/."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from pycocotools import mask as mask_utils

from ros_amf.apps import calibrate, eval_instance, eval_semantic
from ros_amf.apps.train import main_instance, main_semantic
from ros_amf.contract.checkpoint import load_checkpoint
from ros_amf.data.datasets.label_folder import LabelFolderDataset

SIZE = (64, 96)   # height, width


def _shapes(rng, count: int):
    """Masks of squares and discs and a noisy image painted with them."""
    h, w = SIZE
    image = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    masks = []
    for k in range(count):
        mask = np.zeros((h, w), np.uint8)
        cx, cy, r = 18 + 30 * k + int(rng.integers(-3, 4)), int(rng.integers(18, h - 18)), int(rng.integers(8, 12))
        if k % 2:
            cv2.circle(mask, (cx, cy), r, 1, -1)
        else:
            cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
        image[mask > 0] = (230, 60, 40) if k % 2 == 0 else (40, 200, 230)
        masks.append(mask)
    return image, masks


def write_user_coco(root: Path, images: int = 3) -> tuple[Path, Path]:
    """annotations.json + images/<sub>/...: category ids 3 and 17, polygons, both RLE forms, an iscrowd region."""
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [], "categories": [{"id": 17, "name": "gadget"}, {"id": 3, "name": "widget"}]}
    for image_id in range(1, images + 1):
        image, masks = _shapes(rng, 3)
        for k, mask in enumerate(masks[:2]):
            if k == 0:
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                segmentation = [[float(v) for point in contours[0][:, 0] for v in point]]
            elif image_id % 2:
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:   # uncompressed RLE: run lengths in column-major order
                flat = mask.flatten(order="F")
                changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                segmentation = {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": 3 if k == 0 else 17, "segmentation": segmentation,
                                        "iscrowd": 0, "area": float(mask.sum()),
                                        "bbox": list(map(float, cv2.boundingRect(mask)))})
        crowd = mask_utils.encode(np.asfortranarray(masks[2]))
        coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 3,
                                    "segmentation": {"size": crowd["size"], "counts": crowd["counts"].decode("ascii")},
                                    "iscrowd": 1, "area": float(masks[2].sum()),
                                    "bbox": list(map(float, cv2.boundingRect(masks[2])))})
        name = f"{'day' if image_id % 2 else 'night'}/cam0/{image_id:04d}.{'png' if image_id % 2 else 'jpg'}"
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / name), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
        coco["images"].append({"id": image_id, "file_name": name, "height": SIZE[0], "width": SIZE[1]})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root / "annotations.json", root / "images"


TINY_INSTANCE = ("model:\n  backbone_depth: 18\n  backbone_width: 8\n  encoder_channels: 32\n  decoder_channels: 32\n"
                 "  decoder_convs: 2\n  num_masks: 10\n  expand_dim: 64\n  kernel_dim: 16\n  head_norm: gn\n"
                 "  input_size: {short_side: 64, max_long_side: 96}\n"
                 "train:\n  lr: 0.001\n  warmup_iters: 1\n  milestones: []\n  min_sizes: [64]\n  max_size: 96\n")


def test_any_coco_json_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    ann, images = write_user_coco(tmp_path / "mydata")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_INSTANCE)
    run = tmp_path / "run"
    argv = ["--config", str(config), "--ann", str(ann), "--images", str(images), "--val-ann", str(ann),
            "--out", str(run), "--iterations", "2", "--batch-size", "2", "--workers", "0", "--threads", "1",
            "--no-progress", "--checkpoint-every", "1"]
    assert main_instance(argv) == 0
    payload = load_checkpoint(run / "model.pt", task="instance")
    assert payload["class_names"] == ["widget", "gadget"]          # contiguous in category-id order (3, 17)
    val = json.loads((run / "summary.json").read_text())["val"]
    assert val["images"] == 3 and "AP" in val["metrics"]

    monkeypatch.chdir(tmp_path)                                    # the default output folder is relative
    assert eval_instance.main(["--checkpoint", str(run / "model.pt"), "--ann", str(ann), "--images", str(images),
                               "--device", "cpu", "--threads", "1"]) == 0
    out = tmp_path / "runs" / "eval_instance" / "model_annotations"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 3 and metrics["skipped_images"] == [] and set(metrics["metrics"]) >= {"AP", "AP50"}
    detections = json.loads((out / "results_segm.json").read_text())
    assert isinstance(detections, list)
    assert {d["image_id"] for d in detections} <= {image["id"] for image in json.loads(ann.read_text())["images"]}
    assert not (run / "eval_annotations").exists()
    capsys.readouterr()
    # what a user can get wrong: one sentence each, no traceback, no empty metrics written
    common = ["--checkpoint", str(run / "model.pt"), "--ann", str(ann), "--threads", "1"]
    assert eval_instance.main([*common, "--images", str(tmp_path / "elsewhere"), "--device", "cpu"]) == 2
    assert "could be read from" in capsys.readouterr().err
    assert eval_instance.main([*common, "--images", str(images), "--limit", "0"]) == 2
    assert "--limit must be 1 or more" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert eval_instance.main([*common, "--images", str(images), "--device", "cuda"]) == 2
        assert "CUDA is not available here" in capsys.readouterr().err
        # training asked for the GPU says so too, instead of quietly training on the CPU
        assert main_instance([*argv[:argv.index("--out") + 1], str(tmp_path / "gpu_run"), "--iterations", "1",
                              "--device", "cuda"]) == 2
        assert "CUDA is not available here" in capsys.readouterr().err
        assert not (tmp_path / "gpu_run" / "model.pt").exists()


def test_train_and_eval_say_what_data_is_missing(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_INSTANCE)
    assert main_instance(["--config", str(config), "--ann", str(tmp_path / "a.json"), "--out", str(tmp_path / "r")]) == 2
    assert "--ann needs --images too" in capsys.readouterr().err
    assert main_instance(["--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "no training data given" in capsys.readouterr().err
    assert eval_instance.main(["--checkpoint", "x.pt", "--ann", "a.json"]) == 2
    assert "--ann FILE --images DIR" in capsys.readouterr().err


CLASSES = [{"id": 0, "name": "ground", "colour": [90, 90, 90]},
           {"id": 7, "name": "widget", "colour": [230, 60, 40], "small": True},
           {"id": 9, "name": "gadget", "colour": [40, 200, 230]}]


def write_user_semantic(root: Path, images: int = 3) -> tuple[Path, Path, Path]:
    """images/<sub>/x.jpg, labels/<sub>/x.png (ids 0, 7, 9, one unknown value 50), classes.yaml."""
    rng = np.random.default_rng(1)
    for index in range(images):
        image, masks = _shapes(rng, 2)
        label = np.zeros(SIZE, np.uint8)
        label[masks[0] > 0], label[masks[1] > 0] = 7, 9
        label[:2, :3] = 50                       # a value the table does not list
        name = Path(f"seq{index % 2}") / f"{index:03d}"
        for folder, data, suffix in (("images", image[:, :, ::-1], ".png"), ("labels", label, ".png")):
            (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / name) + suffix, data)
    (root / "classes.yaml").write_text(yaml.safe_dump(CLASSES))
    return root / "images", root / "labels", root / "classes.yaml"


def test_label_folder_reader_maps_ids_counts_unknowns_and_names_missing_labels(tmp_path):
    images, labels, classes = write_user_semantic(tmp_path)
    data = LabelFolderDataset(images, labels, classes)
    assert data.class_names == ("ground", "widget", "gadget") and data.small_ids == (1,)
    sample = data[0]
    assert set(np.unique(sample["label"])) == {0, 1, 2, 255} and sample["unknown_label_pixels"] == 6
    (labels / "seq0" / "000.png").unlink()
    with pytest.raises(ValueError, match=r"000\.png: is missing: 1 of 3 images"):
        LabelFolderDataset(images, labels, classes)


def test_semantic_image_label_folder_trains_and_evaluates(tmp_path, capsys):
    images, labels, classes = write_user_semantic(tmp_path / "mydata")
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  architecture: fpn\n  num_classes: 3\n  encoder_width: 8\n  decoder_channels: 16\n"
                      "  input_size: {short_side: 64, max_long_side: 96}\n")
    run = tmp_path / "run"
    argv = ["--config", str(config), "--images", str(images), "--labels", str(labels), "--classes", str(classes),
            "--val-images", str(images), "--out", str(run), "--iterations", "2", "--batch-size", "2",
            "--short-side", "64", "--crop", "64x64", "--workers", "0", "--threads", "1", "--no-progress"]
    assert main_semantic(argv) == 0
    assert load_checkpoint(run / "model.pt", task="semantic")["class_names"] == ["ground", "widget", "gadget"]
    # the value 50 the class table does not list (6 pixels an image): counted and reported, not dropped silently
    read = json.loads((run / "summary.json").read_text())["skipped_data"]["unknown_label_pixels"]
    assert read > 0 and read % 6 == 0                     # 2 iterations x batch 2 reads, 6 pixels each
    assert f"the training images read had {read} label pixels" in capsys.readouterr().err
    out = tmp_path / "eval.json"
    assert eval_semantic.main(["--checkpoint", str(run / "model.pt"), "--images", str(images), "--labels", str(labels),
                               "--classes", str(classes), "--out", str(out), "--threads", "1"]) == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 3 and summary["dataset"] == "folder"
    assert summary["unknown_label_pixels"] == 18 and summary["images_with_unknown_labels"] == 3
    assert "18 label pixels in 3 of 3 images have values the class table does not list" in capsys.readouterr().err
    assert list(summary["per_class"]) == ["ground", "widget", "gadget"] and summary["small_classes"] == ["widget"]
    # the class-prior correction is chosen on the user's own folders too
    calibrated = tmp_path / "calibrated.pt"
    assert calibrate.main(["--checkpoint", str(run / "model.pt"), "--images", str(images), "--labels", str(labels),
                           "--classes", str(classes), "--alphas", "0", "1", "--threads", "1",
                           "--out", str(calibrated)]) == 0
    payload = load_checkpoint(calibrated, task="semantic")
    assert payload["meta"]["prior_correction"]["chosen_on"] == str(labels)
    assert payload["state_dict"]["logit_bias"].shape == (3,)
    assert calibrate.main(["--checkpoint", str(run / "model.pt"), "--images", str(images),
                           "--out", str(tmp_path / "x.pt")]) == 2
