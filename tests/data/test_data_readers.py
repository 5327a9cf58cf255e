"""Each reader round-trips what the generator wrote; broken files give one clear error."""
import copy
import json
import shutil

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ros_amf.data.datasets.camvid import CamVidDataset
from ros_amf.data.datasets.cityscapes import CityscapesDataset
from ros_amf.data.datasets.coco import CocoInstances
from ros_amf.contract.errors import DatasetFileError
from ros_amf.data.synthetic.export import encode_rle
from ros_amf.contract.labels import (CITYSCAPES_INSTANCE_NAMES, LABEL_ID_TO_TRAIN_ID, SYNTH_THING_NAMES,
                                 CITYSCAPES_LABEL_ID)
from ros_amf.data.synthetic.dataset import make_dataset
from ros_amf.data.synthetic.render import render_still

SEED, FRAMES, SIZE = 11, 6, (192, 144)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_dataset(root, FRAMES, SEED, val_fraction=1 / 3, size=SIZE, progress=False)
    return root


def _frames(split):
    indices = range(4) if split == "train" else range(4, 6)
    return {i: render_still(SEED, i, *SIZE) for i in indices}


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_reader_returns_the_rendered_instances(data_root, split):
    ds = CocoInstances(data_root / "coco/images" / split, data_root / f"coco/annotations/instances_{split}.json")
    frames = _frames(split)
    assert len(ds) == len(frames)
    assert ds.class_names == list(SYNTH_THING_NAMES)
    for k, (index, frame) in enumerate(frames.items()):
        s = ds[k]
        assert s["image_id"] == index + 1
        assert s["image"].shape == (SIZE[1], SIZE[0], 3) and s["image"].dtype == np.uint8
        assert np.abs(s["image"].astype(int) - frame.image).max() == 0
        assert [SYNTH_THING_NAMES[c] for c in s["classes"]] == [i.kind for i in frame.instances]
        tiny = [i.mask for i in frame.tiny]
        assert np.array_equal(s["ignore_mask"], np.any(tiny, axis=0) if tiny else np.zeros_like(s["ignore_mask"]))
        for mask, inst, box in zip(s["masks"], frame.instances, s["boxes"]):
            assert _iou(mask, inst.mask) >= 0.9  # exact for RLE, >= 0.9 for polygons
            ys, xs = np.nonzero(inst.mask)
            assert np.allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1)


def test_coco_json_holds_polygons_and_rle_and_pycocotools_agrees(data_root):
    path = data_root / "coco/annotations/instances_train.json"
    anns = json.loads(path.read_text())["annotations"]
    kinds = {"polygon" if isinstance(a["segmentation"], list) else "rle" for a in anns}
    assert kinds == {"polygon", "rle"}
    coco = COCO(str(path))
    ds = CocoInstances(data_root / "coco/images/train", path)
    s = ds[0]
    ann_ids = coco.getAnnIds(imgIds=[s["image_id"]], iscrowd=False)
    assert len(ann_ids) == len(s["masks"])
    for mask, ann in zip(s["masks"], coco.loadAnns(ann_ids)):
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == pytest.approx(mask_utils.area(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))), rel=0.15)


def test_coco_crowd_regions_become_ignore_mask_not_instances(data_root, tmp_path):
    path = data_root / "coco/annotations/instances_train.json"
    data = json.loads(path.read_text())
    image = data["images"][0]
    h, w = image["height"], image["width"]
    crowd = np.zeros((h, w), dtype=bool)
    crowd[5:20, 10:40] = True
    # uncompressed RLE (counts as a list), as COCO stores crowds
    rle = mask_utils.encode(np.asfortranarray(crowd.astype(np.uint8)))
    counts, pos, value = [], 0, 0
    flat = crowd.flatten(order="F")
    while pos < flat.size:
        run = np.argmax(flat[pos:] != value) if (flat[pos:] != value).any() else flat.size - pos
        counts.append(int(run)); pos += run; value = 1 - value
    data["annotations"].append({"id": 10 ** 6, "image_id": image["id"], "category_id": 24, "iscrowd": 1,
                                "segmentation": {"size": [h, w], "counts": counts}, "area": int(crowd.sum()),
                                "bbox": [10, 5, 30, 15]})
    assert mask_utils.decode(rle).sum() == crowd.sum()
    patched = tmp_path / "crowd.json"
    patched.write_text(json.dumps(data))
    plain = CocoInstances(data_root / "coco/images/train", path)[0]
    with_crowd = CocoInstances(data_root / "coco/images/train", patched)[0]
    assert len(with_crowd["masks"]) == len(plain["masks"])
    assert np.array_equal(with_crowd["ignore_mask"], crowd | plain["ignore_mask"])


def test_coco_annotation_whose_mask_has_no_pixel_is_counted_and_reaches_the_batch(data_root, tmp_path):
    from ros_amf.data.collate import collate_batch

    path = data_root / "coco/annotations/instances_train.json"
    data = json.loads(path.read_text())
    image = data["images"][0]
    # a degenerate polygon (all points on one line) decodes to no pixel
    data["annotations"].append({"id": 10 ** 6, "image_id": image["id"], "category_id": 24, "iscrowd": 0,
                                "segmentation": [[10.2, 10.2, 10.3, 10.2, 10.4, 10.2]], "area": 0.0,
                                "bbox": [10, 10, 0.2, 0]})
    patched = tmp_path / "empty.json"
    patched.write_text(json.dumps(data))
    plain = CocoInstances(data_root / "coco/images/train", path)[0]
    reader = CocoInstances(data_root / "coco/images/train", patched)
    sample = reader[0]
    assert len(sample["masks"]) == len(plain["masks"]) and plain["empty_masks_skipped"] == 0
    assert sample["empty_masks_skipped"] == 1 and reader.empty_masks_skipped == 1
    batch = collate_batch([sample, plain])
    assert batch["skipped_data"] == {"unknown_label_pixels": 0, "empty_masks_skipped": 1}


def test_coco_category_ids_map_to_contiguous_ids(data_root, tmp_path):
    data = json.loads((data_root / "coco/annotations/instances_val.json").read_text())
    remap = {c["id"]: 1000 + 7 * c["id"] for c in data["categories"]}
    for c in data["categories"]:
        c["id"] = remap[c["id"]]
    for a in data["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    data["categories"].reverse()
    (tmp_path / "remapped.json").write_text(json.dumps(data))
    ds = CocoInstances(data_root / "coco/images/val", tmp_path / "remapped.json")
    ref = CocoInstances(data_root / "coco/images/val", data_root / "coco/annotations/instances_val.json")
    assert ds.class_names == ref.class_names
    assert np.array_equal(ds[1]["classes"], ref[1]["classes"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_cityscapes_reader_returns_train_ids_and_the_instance_classes(data_root, split):
    ds = CityscapesDataset(data_root / "cityscapes", split)
    frames = _frames(split)
    assert len(ds) == len(frames)
    for k, frame in enumerate(frames.values()):
        s = ds[k]
        assert np.array_equal(s["label"], LABEL_ID_TO_TRAIN_ID[frame.label_ids])
        assert np.array_equal(ds.load_label(k), s["label"])
        expected = [i for i in frame.instances if i.kind in CITYSCAPES_INSTANCE_NAMES]
        assert sorted(CITYSCAPES_INSTANCE_NAMES[c] for c in s["classes"]) == sorted(i.kind for i in expected)
        got = {m.tobytes() for m in s["masks"]}
        assert all(i.mask.tobytes() in got for i in expected)
        # remnants too small to be instances are left without instance number -> ignored
        tiny = [i.mask for i in frame.tiny if i.kind in CITYSCAPES_INSTANCE_NAMES]
        assert np.array_equal(s["ignore_mask"], np.any(tiny, axis=0) if tiny else np.zeros_like(s["ignore_mask"]))


def test_cityscapes_group_regions_are_ignored_not_instances(data_root, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(data_root / "cityscapes", root)
    ds = CityscapesDataset(root, "val")
    path = ds.gt_path(ds.images[0], "instanceIds")
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    ids[:4, :4] = CITYSCAPES_LABEL_ID["car"]  # a "car group" region without an instance number
    cv2.imwrite(str(path), ids)
    s = ds[0]
    assert s["ignore_mask"][:4, :4].all() and s["ignore_mask"].sum() == 16
    assert not s["masks"][:, :4, :4].any()


def test_cityscapesscripts_evaluation_accepts_the_tree_and_agrees_with_our_train_ids(data_root, tmp_path):
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval
    gt = sorted(str(p) for p in (data_root / "cityscapes/gtFine/val").glob("*/*_gtFine_labelIds.png"))
    preds = []
    ours_inter = ours_union = 0
    for i, g in enumerate(gt):
        label = cv2.imread(g, cv2.IMREAD_UNCHANGED)
        pred = label.copy()
        pred[: label.shape[0] // 2][pred[: label.shape[0] // 2] == CITYSCAPES_LABEL_ID["sky"]] = CITYSCAPES_LABEL_ID["building"]
        p = tmp_path / f"pred_{i}.png"
        cv2.imwrite(str(p), pred)
        preds.append(str(p))
        t_gt, t_pred = LABEL_ID_TO_TRAIN_ID[label], LABEL_ID_TO_TRAIN_ID[pred]
        valid = t_gt != 255
        sky = 10
        ours_inter += np.sum((t_gt == sky) & (t_pred == sky) & valid)
        ours_union += np.sum(((t_gt == sky) | (t_pred == sky)) & valid)
    args = copy.copy(cs_eval.args)
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, False
    args.exportFile = str(tmp_path / "cs_eval.json")
    result = cs_eval.evaluateImgLists(preds, gt, args)
    assert result["classScores"]["sky"] == pytest.approx(ours_inter / ours_union)
    assert result["classScores"]["road"] == pytest.approx(1.0)


@pytest.mark.parametrize("label_format", ["index", "color"])
def test_camvid_reader_maps_labels_to_11_classes(data_root, label_format):
    ds = CamVidDataset(data_root / "camvid", "train", label_format)
    frames = _frames("train")
    assert len(ds) == len(frames)
    cs_to_camvid = {"road": 3, "sidewalk": 4, "building": 1, "vegetation": 5, "terrain": 5, "sky": 0, "pole": 2,
                    "traffic light": 6, "traffic sign": 6, "person": 9, "rider": 10, "bicycle": 10, "car": 8,
                    "truck": 8}
    for k, frame in enumerate(frames.values()):
        s = ds[k]
        assert s["unknown_label_pixels"] == 0
        for name, train_id in cs_to_camvid.items():
            assert (s["label"][frame.label_ids == CITYSCAPES_LABEL_ID[name]] == train_id).all(), name
        assert np.array_equal(ds.load_label(k), s["label"])


# ------------------------------------------------------------------ error messages ----

def test_missing_coco_annotation_file_names_the_file(tmp_path):
    with pytest.raises(DatasetFileError, match="instances_x.json: COCO annotation file is missing"):
        CocoInstances(tmp_path, tmp_path / "instances_x.json")


def test_malformed_coco_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetFileError, match="bad.json: is not valid JSON"):
        CocoInstances(tmp_path, bad)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetFileError, match="has no 'categories' list"):
        CocoInstances(tmp_path, bad)


def test_annotation_with_unknown_category_is_reported(data_root, tmp_path):
    data = json.loads((data_root / "coco/annotations/instances_val.json").read_text())
    data["annotations"][0]["category_id"] = 999
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(DatasetFileError, match="category_id 999 which is not in 'categories'"):
        CocoInstances(data_root / "coco/images/val", tmp_path / "a.json")


def test_missing_or_corrupt_image_and_label_files_are_named(data_root, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(data_root / "cityscapes", root)
    ds = CityscapesDataset(root, "train")
    ds.images[0].write_bytes(b"not a png")
    with pytest.raises(DatasetFileError, match="leftImg8bit.png: cannot be decoded as an image"):
        ds[0]
    ds.gt_path(ds.images[1], "labelIds").unlink()
    with pytest.raises(DatasetFileError, match="gtFine_labelIds.png: gtFine labelIds map is missing"):
        ds[1]
    label_path = ds.gt_path(ds.images[2], "labelIds")
    cv2.imwrite(str(label_path), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetFileError, match="is 10x10 but its image is 192x144"):
        ds[2]
    with pytest.raises(DatasetFileError, match="Cityscapes image folder for split 'test' is missing"):
        CityscapesDataset(root, "test")


def test_camvid_missing_label_is_named(data_root, tmp_path):
    root = tmp_path / "camvid"
    shutil.copytree(data_root / "camvid", root)
    ds = CamVidDataset(root, "val")
    ds.label_path(ds.images[0]).unlink()
    with pytest.raises(DatasetFileError, match=r"valannot/.*\.png: CamVid index label is missing"):
        ds[0]


def test_uncompressed_rle_written_for_crowds_decodes_to_the_same_mask():
    from ros_amf.data.datasets.coco import decode_segmentation
    from ros_amf.data.synthetic.export import uncompressed_rle
    rng = np.random.default_rng(0)
    for first_pixel in (False, True):
        mask = rng.random((13, 17)) < 0.3
        mask[0, 0] = first_pixel
        rle = uncompressed_rle(mask)
        assert isinstance(rle["counts"], list) and sum(rle["counts"]) == mask.size
        assert np.array_equal(decode_segmentation(rle, 13, 17), mask)
        assert np.array_equal(decode_segmentation(encode_rle(mask), 13, 17), mask)
