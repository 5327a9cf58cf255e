"""Our class tables agree with cityscapesScripts and the CamVid conventions."""
import numpy as np
from cityscapesscripts.helpers.labels import labels as cs_labels, name2label

from ros_amf.contract import labels as L


def test_label_id_to_train_id_matches_cityscapesscripts_table():
    for lab in cs_labels:
        if lab.id < 0:
            continue
        expected = lab.trainId if 0 <= lab.trainId < 255 else 255
        assert L.LABEL_ID_TO_TRAIN_ID[lab.id] == expected, lab.name
    assert len(L.CITYSCAPES_TRAIN_NAMES) == 19
    for train_id, name in enumerate(L.CITYSCAPES_TRAIN_NAMES):
        assert name2label[name].trainId == train_id
        assert L.CITYSCAPES_TRAIN_COLORS[train_id] == name2label[name].color


def test_instance_classes_are_the_eight_evaluated_thing_classes():
    assert L.CITYSCAPES_INSTANCE_NAMES == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


def test_small_object_sets_follow_afma_paper():
    assert {L.CITYSCAPES_TRAIN_NAMES[i] for i in L.CITYSCAPES_SMALL_TRAIN_IDS} == {
        "pole", "traffic light", "traffic sign", "person", "rider", "motorcycle", "bicycle"}
    assert {L.CAMVID_CLASS_NAMES[i] for i in L.CAMVID_SMALL_TRAIN_IDS} == {"SignSymbol", "Pedestrian", "Pole", "Bicyclist"}


def test_coco_size_buckets_use_32_and_96_squared():
    assert L.coco_size_bucket(32 ** 2 - 1) == "small"
    assert L.coco_size_bucket(32 ** 2) == "medium"
    assert L.coco_size_bucket(96 ** 2 - 1) == "medium"
    assert L.coco_size_bucket(96 ** 2) == "large"


def test_camvid_colour_labels_map_32_classes_to_11_and_count_unknown_colours():
    names = list(L.CAMVID32_COLORS)
    rgb = np.array([[L.CAMVID32_COLORS[n] for n in names] + [(1, 2, 3)]], dtype=np.uint8)
    train_ids, unknown = L.camvid_color_to_train_id(rgb)
    for i, name in enumerate(names):
        assert train_ids[0, i] == L.CAMVID32_TO_11.get(name, 255), name
    assert train_ids[0, -1] == 255 and unknown == 1
    # every 11-class name is reached, and the classes' own colours map to themselves
    assert set(L.CAMVID32_TO_11.values()) == set(range(11))
    own, _ = L.camvid_color_to_train_id(np.array([L.CAMVID_CLASS_COLORS], dtype=np.uint8))
    assert own[0].tolist() == list(range(11))


def test_synthetic_thing_classes_are_cityscapes_labels_in_category_id_order():
    assert L.SYNTH_CATEGORY_IDS == tuple(name2label[n].id for n in L.SYNTH_THING_NAMES)
    assert list(L.SYNTH_CATEGORY_IDS) == sorted(L.SYNTH_CATEGORY_IDS)
