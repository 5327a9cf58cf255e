"""Write rendered frames in the real datasets' formats: COCO instances, Cityscapes, CamVid.

Layout under the output directory (names as in the real datasets):

    coco/images/{train,val}/<name>.png
    coco/annotations/instances_{train,val}.json
    cityscapes/leftImg8bit/{split}/<city>/<city>_000000_<frame:06d>_leftImg8bit.png
    cityscapes/gtFine/{split}/<city>/<city>_000000_<frame:06d>_gtFine_{labelIds,instanceIds,color}.png
    camvid/{split}/<name>.png                    images
    camvid/{split}annot/<name>.png               11-class index labels (SegNet layout, 11 = void)
    camvid/{split}_labels/<name>_L.png           32-class colour labels (original CamVid colours)

The three image files of a frame are hard links to one PNG where the file system allows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ros_amf.contract.labels import (CAMVID32_TO_11, CAMVID_VOID_INDEX, CITYSCAPES_LABEL_ID, CITYSCAPES_TO_CAMVID32,
                                 SYNTH_CATEGORY_IDS, SYNTH_THING_NAMES, cityscapes_label_id_colors,
                                 cityscapes_label_ids_to_camvid_rgb)
from ros_amf.data.synthetic.render import RenderedFrame

CITY = {"train": "synthtown", "val": "synthville"}
POLYGON_MIN_IOU = 0.9   # a polygon is written only if pycocotools rasterises it this close to the mask
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def coco_categories() -> list[dict]:
    return [{"id": cid, "name": name, "supercategory": "street"}
            for cid, name in zip(SYNTH_CATEGORY_IDS, SYNTH_THING_NAMES)]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) with exclusive ends of the True pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _crop_polygons(crop: np.ndarray) -> list[np.ndarray] | None:
    """Outer contours of a mask crop as [K, 2] point arrays following pixel edges, or None
    if the mask has holes (polygons cannot express those)."""
    padded = np.pad(crop.astype(np.uint8), 1)
    # contours of a 4x upsampled mask run within 1/8 px of the pixel edges, not through pixel centres
    big = cv2.resize(padded, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None or (hierarchy[0][:, 3] >= 0).any() or any(len(c) < 3 for c in contours):
        return None
    return [(c[:, 0, :].astype(np.float64) + 0.5) / 4.0 - 1.0 for c in contours]


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed RLE with the counts as text, as stored in COCO JSON."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_segmentation(mask: np.ndarray) -> dict | list:
    """Polygons when they reproduce the mask (IoU >= POLYGON_MIN_IOU), else compressed RLE."""
    x0, y0, x1, y1 = _bbox(mask)
    crop = mask[y0:y1, x0:x1]
    polys = _crop_polygons(crop)
    if polys is not None:
        flat = [p.reshape(-1).tolist() for p in polys]
        drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, y1 - y0, x1 - x0))).astype(bool)
        union = np.logical_or(drawn, crop).sum()
        if union and np.logical_and(drawn, crop).sum() / union >= POLYGON_MIN_IOU:
            return [[round(float(v), 2) for v in (p + (x0, y0)).reshape(-1)] for p in polys]
    return encode_rle(mask)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (counts as a list of run lengths, column-major, starting with 0s)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def frame_annotations(frame: RenderedFrame, image_id: int) -> list[dict]:
    """COCO annotations (without ids) of a frame: every instance (polygons or compressed RLE),
    then the too-small remnants as iscrowd regions in uncompressed RLE, as COCO stores crowds."""
    anns = []
    for inst, crowd in [(i, 0) for i in frame.instances] + [(i, 1) for i in frame.tiny]:
        x0, y0, x1, y1 = _bbox(inst.mask)
        anns.append({
            "image_id": image_id, "category_id": inst.category_id, "iscrowd": crowd,
            "segmentation": uncompressed_rle(inst.mask) if crowd else coco_segmentation(inst.mask),
            "area": int(inst.mask.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0],
        })
    return anns


def write_coco_json(path: Path, images: list[dict], annotations: list[dict], description: str) -> None:
    """Write a COCO instances file; annotation ids are assigned here in order (1, 2, ...)."""
    for i, ann in enumerate(annotations, start=1):
        ann["id"] = i
    payload = {"info": {"description": description, "version": "1.0"}, "licenses": [],
               "images": images, "annotations": annotations, "categories": coco_categories()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)


def cityscapes_stem(split: str, index: int) -> str:
    return f"{CITY[split]}_000000_{index:06d}"


def _camvid_index_table() -> np.ndarray:
    table = np.full(256, CAMVID_VOID_INDEX, dtype=np.uint8)
    for cs_name, cv_name in CITYSCAPES_TO_CAMVID32.items():
        table[CITYSCAPES_LABEL_ID[cs_name]] = CAMVID32_TO_11.get(cv_name, CAMVID_VOID_INDEX)
    return table


_CS_COLORS = cityscapes_label_id_colors()
_CAMVID_INDEX = _camvid_index_table()


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


def _imwrite(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array, _PNG_FAST):
        raise OSError(f"{path}: could not write the PNG; check that the directory is writable.")


def write_frame_files(out: Path, frame: RenderedFrame, split: str, index: int) -> dict:
    """Write one frame into the Cityscapes, COCO and CamVid trees; return its COCO image entry."""
    stem = cityscapes_stem(split, index)
    city = CITY[split]
    left = out / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    _imwrite(left, cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    gt = out / "cityscapes" / "gtFine" / split / city
    _imwrite(gt / f"{stem}_gtFine_labelIds.png", frame.label_ids)
    _imwrite(gt / f"{stem}_gtFine_instanceIds.png", frame.instance_ids.astype(np.uint16))
    _imwrite(gt / f"{stem}_gtFine_color.png", cv2.cvtColor(_CS_COLORS[frame.label_ids], cv2.COLOR_RGB2BGR))
    _link_or_copy(left, out / "coco" / "images" / split / f"{stem}.png")
    _link_or_copy(left, out / "camvid" / split / f"{stem}.png")
    _imwrite(out / "camvid" / f"{split}annot" / f"{stem}.png", _CAMVID_INDEX[frame.label_ids])
    _imwrite(out / "camvid" / f"{split}_labels" / f"{stem}_L.png",
             cv2.cvtColor(cityscapes_label_ids_to_camvid_rgb(frame.label_ids), cv2.COLOR_RGB2BGR))
    h, w = frame.label_ids.shape
    return {"id": index + 1, "file_name": f"{stem}.png", "width": w, "height": h}
