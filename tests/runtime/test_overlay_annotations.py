"""The overlay says what it shows: boxes, class names and scores of the instances, a legend of the
semantic classes present (ros_amf.runtime.outputs.overlay, numpy/cv2 only)."""
import numpy as np

from ros_amf.runtime.outputs import InstanceOutput, overlay


def _scene():
    image = np.full((120, 160, 3), 90, np.uint8)
    ids = np.zeros((120, 160), np.uint8)
    ids[60:100, 20:60] = 1
    instances = InstanceOutput(ids=ids, classes=np.array([1]), scores=np.array([0.87], np.float32),
                               boxes=np.array([[20, 60, 59, 99]], np.int32), areas=np.array([1600]))
    labels = np.zeros((120, 160), np.uint8)
    labels[:, 80:] = 2
    labels[:10, :10] = 255                                    # ignore: never in the legend
    return image, ids, instances, labels


CLASS_COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
INSTANCE_COLOURS = np.array([[250, 250, 0]], np.uint8)


def test_boxes_names_scores_and_legend_are_drawn_only_when_asked_for():
    image, ids, instances, labels = _scene()
    plain = overlay(image, labels, ids, CLASS_COLOURS, INSTANCE_COLOURS, 0.5)
    annotated = overlay(image, labels, ids, CLASS_COLOURS, INSTANCE_COLOURS, 0.5, instances=instances,
                        instance_names=["car", "person"], semantic_names=["road", "building", "car"])
    assert annotated.shape == plain.shape and annotated.dtype == np.uint8
    changed = np.any(annotated != plain, axis=2)
    # the box outline in the instance colour, on all four sides
    assert (annotated[80, 20] == INSTANCE_COLOURS[0]).all() and (annotated[80, 59] == INSTANCE_COLOURS[0]).all()
    assert (annotated[99, 40] == INSTANCE_COLOURS[0]).all()
    # the "person 0.87" tag sits on a filled box just above the instance, in the instance colour
    tag = annotated[52:60, 20:60]               # one 8-pixel text line at this image size
    assert (tag == INSTANCE_COLOURS[0]).all(axis=2).mean() > 0.4 and changed[52:60, 20:60].any()
    # the legend (top right) lists the classes present, most pixels first: road (0), then car (2)
    legend = annotated[:24, 100:]
    assert (legend == CLASS_COLOURS[0]).all(axis=2).any() and (legend == CLASS_COLOURS[2]).all(axis=2).any()
    assert not (legend == CLASS_COLOURS[1]).all(axis=2).any()          # building is absent: not listed
    # the interior of the mask away from the labels is untouched by the annotations
    assert not changed[75:95, 25:55].any()


def test_text_stays_inside_small_images_and_unknown_class_ids_are_named():
    image = np.zeros((40, 48, 3), np.uint8)
    ids = np.zeros((40, 48), np.uint8)
    ids[0:10, 40:48] = 1
    instances = InstanceOutput(ids=ids, classes=np.array([7]), scores=np.array([0.5], np.float32),
                               boxes=np.array([[40, 0, 47, 9]], np.int32), areas=np.array([80]))
    out = overlay(image, None, ids, CLASS_COLOURS, INSTANCE_COLOURS, 0.5, instances=instances,
                  instance_names=["car"])
    assert out.shape == (40, 48, 3) and out.any()
