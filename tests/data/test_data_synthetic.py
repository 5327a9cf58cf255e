"""The synthetic street generator: deterministic, small-object rich, masks consistent with labels."""
import numpy as np

from ros_amf.contract.labels import CITYSCAPES_LABEL_ID, coco_size_bucket
from ros_amf.data.synthetic.render import render_still
from ros_amf.data.synthetic.drive_bag import render_drive


def test_same_seed_and_index_render_the_same_frame():
    a, b = render_still(3, 5, 160, 120), render_still(3, 5, 160, 120)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instance_ids, b.instance_ids)
    assert [i.kind for i in a.instances] == [i.kind for i in b.instances]
    c = render_still(4, 5, 160, 120)
    assert not np.array_equal(a.image, c.image)


def test_at_least_30_percent_of_instances_are_small_at_640x480():
    buckets = [coco_size_bucket(inst.mask.sum()) for i in range(4) for inst in render_still(0, i).instances]
    assert len(buckets) >= 40
    assert buckets.count("small") / len(buckets) >= 0.30
    assert buckets.count("medium") > 0 and buckets.count("large") > 0


def test_visible_masks_are_disjoint_and_carry_their_class_in_the_label_map():
    frame = render_still(1, 2, 320, 240)
    cover = np.zeros(frame.label_ids.shape, dtype=np.int32)
    for inst in frame.instances:
        cover += inst.mask
        assert (frame.label_ids[inst.mask] == CITYSCAPES_LABEL_ID[inst.kind]).all()
    assert cover.max() == 1  # painter's order: a pixel belongs to at most one instance


def test_every_thing_class_and_stuff_class_appears():
    kinds = {inst.kind for i in range(6) for inst in render_still(0, i, 320, 240).instances}
    assert kinds == {"car", "truck", "person", "rider", "bicycle", "pole", "traffic sign", "traffic light"}
    labels = set(np.unique(np.concatenate([render_still(0, i, 320, 240).label_ids.ravel() for i in range(3)])))
    for stuff in ("road", "sidewalk", "building", "vegetation", "terrain", "sky"):
        assert CITYSCAPES_LABEL_ID[stuff] in labels, stuff


def test_drive_changes_smoothly_between_consecutive_frames():
    frames = [f for f, _ in render_drive(0, 4, (160, 120))]
    step = np.mean([np.mean(frames[i].label_ids != frames[i + 1].label_ids) for i in range(3)])
    unrelated = np.mean(render_still(0, 0, 160, 120).label_ids != frames[0].label_ids)
    assert step < 0.1 and step < unrelated / 3
