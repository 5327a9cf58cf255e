"""Augmentations keep image, masks, boxes and label maps consistent and are seed-deterministic."""
import cv2
import numpy as np
import pytest
import torch

from ros_amf.data.collate import collate_batch
from ros_amf.data.targets import boxes_from_masks
from ros_amf.data.transforms import (AugmentedDataset, HorizontalFlip, RandomCrop, RandomShortSideResize,
                                     TrainAugmentation, crop_sample, resize_crop_sample, resize_sample)
from ros_amf.contract.pixels import IMAGENET_MEAN, IMAGENET_STD


def _sample(h=60, w=80):
    """An image whose colour encodes the instance/label so consistency can be checked after warping."""
    image = np.zeros((h, w, 3), dtype=np.uint8)
    label = np.zeros((h, w), dtype=np.uint8)
    masks = np.zeros((3, h, w), dtype=bool)
    masks[0, 5:25, 5:30] = True
    masks[1, 30:55, 40:75] = True
    masks[2, 2:6, 70:78] = True  # small one in the top-right corner
    for k, m in enumerate(masks):
        image[m] = (50 * (k + 1), 0, 0)
        label[m] = k + 1
    ignore = np.zeros((h, w), dtype=bool)
    ignore[40:50, 0:10] = True
    return {"image": image, "label": label, "masks": masks, "classes": np.array([4, 5, 6]),
            "boxes": boxes_from_masks(masks), "ignore_mask": ignore, "image_id": 1}


def _assert_consistent(s, exact_image=True):
    assert s["masks"].shape[1:] == s["image"].shape[:2] == s["label"].shape == s["ignore_mask"].shape
    assert np.array_equal(s["boxes"], boxes_from_masks(s["masks"]))
    assert len(s["classes"]) == len(s["masks"])
    for m, c in zip(s["masks"], s["classes"]):
        k = int(c) - 4
        assert m.any()
        assert (s["label"][m] == k + 1).all()
        if exact_image:
            assert (s["image"][m][:, 0] == 50 * (k + 1)).all()
        else:  # bilinear image: mask interiors keep the colour, edges blend
            inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            assert inner.any() and (s["image"][inner][:, 0] == 50 * (k + 1)).all()


def test_flip_moves_masks_boxes_labels_and_image_together():
    s = HorizontalFlip(p=1.0)(_sample(), np.random.default_rng(0))
    _assert_consistent(s)
    assert s["boxes"][0].tolist() == [80 - 30, 5, 80 - 5, 25]
    assert s["ignore_mask"][40:50, 70:80].all()


def test_resize_keeps_targets_aligned_and_respects_short_side_and_cap():
    s = RandomShortSideResize(short_sides=(120,), max_long_side=150)(_sample(), np.random.default_rng(0))
    assert s["image"].shape[:2] == (112, 150)  # short side 120 would make the long side 160 > cap
    _assert_consistent(s, exact_image=False)


def test_crop_removes_instances_cropped_away():
    s = RandomCrop((30, 40))(_sample(), np.random.default_rng(1))
    _assert_consistent(s)
    assert s["image"].shape[:2] == (30, 40)
    assert len(s["masks"]) < 3


@pytest.mark.parametrize("size_wh", [(123, 77), (80, 60), (41, 31), (311, 233)])
def test_resize_crop_equals_resize_then_crop(size_wh):
    # Training resizes only the crop window; it must give what resizing the whole image then
    # cropping gives: masks, label and ignore mask exactly, the bilinear image within one level.
    rng = np.random.default_rng(3)
    sample = _sample(61, 83)
    sample["image"] = rng.integers(0, 256, sample["image"].shape, dtype=np.uint8)
    sample["masks"][:, 10:50:3, 7:70:2] ^= True  # thin stripes: every row and column matters
    sample["label"] = rng.integers(0, 9, sample["label"].shape, dtype=np.uint8)
    for _ in range(5):
        window = RandomCrop((40, 50)).window(size_wh[1], size_wh[0], rng)
        two_step = crop_sample(resize_sample(sample, size_wh), *window)
        one_step = resize_crop_sample(sample, size_wh, *window)
        assert one_step["image"].shape == two_step["image"].shape == (window[2], window[3], 3)
        assert np.abs(one_step["image"].astype(int) - two_step["image"].astype(int)).max() <= 1
        for key in ("masks", "label", "ignore_mask", "classes", "boxes"):
            assert np.array_equal(one_step[key], two_step[key]), key


def test_training_pipeline_is_deterministic_under_a_seed_and_varies_with_it():
    t = TrainAugmentation(short_sides=(64, 96, 128), max_long_side=200, crop_hw=(64, 64), photometric=True)
    a = AugmentedDataset([_sample()], t, seed=5)[(0, 0)]
    b = AugmentedDataset([_sample()], t, seed=5)[(0, 0)]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["masks"], b["masks"])
    outs = {AugmentedDataset([_sample()], t, seed=s)[(0, 0)]["image"].tobytes() for s in range(6)}
    assert len(outs) > 1
    ds = AugmentedDataset([_sample()], t, seed=5)
    assert not np.array_equal(ds[(0, 1)]["image"], a["image"])  # epoch 1


def test_photometric_jitter_changes_only_the_image():
    # the same pipeline and seed with and without the jitter: the geometry (here: identity or a
    # flip) is the same, so only the image may differ, and it must
    plain = TrainAugmentation(short_sides=(60,), max_long_side=80, crop_hw=None, photometric=False)
    jittered = TrainAugmentation(short_sides=(60,), max_long_side=80, crop_hw=None, photometric=True)
    ref = _sample()
    p = plain(_sample(), np.random.default_rng(3))
    s = jittered(_sample(), np.random.default_rng(3))
    assert np.array_equal(s["label"], ref["label"]) or np.array_equal(s["label"], ref["label"][:, ::-1])
    assert s["masks"].sum() == ref["masks"].sum()
    for key in ("label", "masks", "boxes", "classes", "ignore_mask"):
        assert np.array_equal(s[key], p[key]), key
    assert s["image"].shape == p["image"].shape and s["image"].dtype == np.uint8
    assert np.abs(s["image"].astype(int) - p["image"].astype(int)).mean() > 1.0


def test_collate_pads_to_multiples_of_32_and_normalises_like_the_runtime():
    a, b = _sample(60, 80), _sample(40, 100)
    a["image"][0, 0] = (255, 128, 0)
    batch = collate_batch([a, b])
    assert batch["images"].shape == (2, 3, 64, 128)
    assert batch["image_sizes"] == [(60, 80), (40, 100)]
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(batch["images"][0, :, 0, 0], expected, atol=1e-6)
    assert (batch["images"][0, :, 60:, :] == 0).all()
    assert (batch["labels"][1, 40:, :] == 255).all() and (batch["labels"][0, :60, :80].numpy() == a["label"]).all()
    assert batch["masks"][1].shape == (3, 64, 128) and batch["masks"][1][:, 40:].sum() == 0
    assert batch["classes"][0].dtype == torch.long and batch["boxes"][0].shape == (3, 4)
    assert batch["ignore_masks"][0, 40:50, 0:10].all()


def test_semantic_only_samples_collate_without_instance_fields():
    s = _sample()
    for key in ("masks", "classes", "boxes", "ignore_mask"):
        s.pop(key)
    batch = collate_batch([s])
    assert "masks" not in batch and batch["labels"].shape == (1, 64, 96)


@pytest.mark.parametrize("p", [0.0])
def test_flip_with_probability_zero_is_identity(p):
    s = HorizontalFlip(p)(_sample(), np.random.default_rng(0))
    assert np.array_equal(s["image"], _sample()["image"])


@pytest.mark.parametrize("mean, std", [(IMAGENET_MEAN, IMAGENET_STD), ((0.5,) * 3, (0.5,) * 3)])
def test_a_crop_larger_than_the_image_is_padded_like_inference(mean, std):
    """Inference pads bottom/right with 0 after normalisation (the mean colour, whatever the weights' pixel
    normalisation); a training crop past the image must look the same, flipped or not, jittered or not."""
    from ros_amf.contract.pixels import PixelNormalisation
    pixels = PixelNormalisation(mean, std)
    t = TrainAugmentation(short_sides=(60,), max_long_side=None, crop_hw=(96, 96), photometric=True)
    flips = set()
    for seed in range(8):
        s = t(_sample(), np.random.default_rng(seed))      # 60x80 image in a 96x96 crop
        assert s["image"].shape[:2] == (96, 96) and s["valid_hw"] == (60, 80)
        assert (s["label"][60:] == 255).all() and (s["label"][:, 80:] == 255).all() and s["ignore_mask"][60:].all()
        assert not s["masks"][:, 60:].any() and not s["masks"][:, :, 80:].any()
        flips.add(bool(s["label"][8, 70] == 1))              # instance 1 (x 5..29) mirrored to x 50..74
        images = collate_batch([s], pixels)["images"][0]
        assert (images[:, 60:] == 0).all() and (images[:, :, 80:] == 0).all()
        assert images[:, :60, :80].abs().sum() > 0
    assert flips == {True, False}
