"""Batching samples for the models: normalise with the runtime's ImageNet statistics and pad
bottom/right to a multiple of 32, exactly like the inference pre-processing does."""
from __future__ import annotations

import numpy as np
import torch

from ros_amf.contract.labels import IGNORE_INDEX
from ros_amf.contract.input_size import pad_to
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation, normalise


# what a reader counts per sample instead of dropping it silently: label pixels whose value the class table does
# not list (trained and scored as ignore), annotations whose mask decodes to no pixel (not a target)
SKIP_COUNTS = ("unknown_label_pixels", "empty_masks_skipped")


def collate_batch(samples: list[dict], pixels: PixelNormalisation = IMAGENET) -> dict:
    """Stack samples into a batch, images normalised the way the model's weights expect (``pixels``).

    Returns "images" float [B,3,Hp,Wp] (padding = 0, i.e. the mean colour), "image_sizes"
    [(h, w)] valid region per image, "image_ids"; when the samples have them: "labels" long
    [B,Hp,Wp] with padding = 255 (ignored), "ignore_masks" bool [B,Hp,Wp] and per-image lists
    "masks" (bool [N,Hp,Wp]), "classes" (long [N]), "boxes" (float [N,4] xyxy); "skipped_data": the
    samples' counts of what their reader could not use (SKIP_COUNTS), summed, so training can report them.
    """
    hp = pad_to(max(s["image"].shape[0] for s in samples))
    wp = pad_to(max(s["image"].shape[1] for s in samples))
    b = len(samples)
    images = torch.zeros(b, 3, hp, wp)
    batch: dict = {"images": images, "image_sizes": [], "image_ids": [s.get("image_id") for s in samples],
                   "skipped_data": {key: sum(int(s.get(key, 0)) for s in samples) for key in SKIP_COUNTS}}
    if all("label" in s for s in samples):
        batch["labels"] = torch.full((b, hp, wp), IGNORE_INDEX, dtype=torch.long)
    if all("masks" in s for s in samples):
        batch.update(masks=[], classes=[], boxes=[], ignore_masks=torch.zeros(b, hp, wp, dtype=torch.bool))
    for i, s in enumerate(samples):
        h, w = s["image"].shape[:2]
        vh, vw = s.get("valid_hw", (h, w))   # a crop padded past the image: the rest stays 0, the mean colour
        images[i, :, :vh, :vw] = normalise(torch.from_numpy(np.ascontiguousarray(s["image"][:vh, :vw])).permute(2, 0, 1),
                                           pixels)
        batch["image_sizes"].append((h, w))
        if "labels" in batch:
            batch["labels"][i, :h, :w] = torch.from_numpy(s["label"].astype(np.int64))
        if "masks" in batch:
            masks = torch.zeros(len(s["masks"]), hp, wp, dtype=torch.bool)
            masks[:, :h, :w] = torch.from_numpy(s["masks"])
            batch["masks"].append(masks)
            batch["classes"].append(torch.from_numpy(s["classes"]).long())
            batch["boxes"].append(torch.from_numpy(s["boxes"]).float())
            if "ignore_mask" in s:
                batch["ignore_masks"][i, :h, :w] = torch.from_numpy(s["ignore_mask"])
    return batch
