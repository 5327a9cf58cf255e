"""Class tables for Cityscapes, CamVid, COCO and the synthetic street data.

The Cityscapes ids, train ids, colours and instance flags come from cityscapesScripts'
own ``labels`` table (imported, not retyped). CamVid's 32 colour classes and the usual
32 -> 11 grouping follow the SegNet/"CamVid-11" convention. The small-object class sets
are those of the AFMA paper (Sec. 4: CamVid and Cityscapes small classes); the COCO size
buckets are the standard ones (area < 32^2 small, < 96^2 medium, else large).
"""
from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

IGNORE_INDEX = 255

# ---------------------------------------------------------------- Cityscapes ----------
CITYSCAPES_LABEL_ID: dict[str, int] = {lab.name: lab.id for lab in _CITYSCAPES_LABELS if lab.id >= 0}
CITYSCAPES_LABEL_COLOR: dict[int, tuple[int, int, int]] = {
    lab.id: tuple(lab.color) for lab in _CITYSCAPES_LABELS if lab.id >= 0}

# the 19 evaluated classes, in train-id order
CITYSCAPES_TRAIN_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((lab for lab in _CITYSCAPES_LABELS if 0 <= lab.trainId < IGNORE_INDEX),
                               key=lambda lab: lab.trainId))
CITYSCAPES_TRAIN_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(lab.color) for lab in sorted((lab for lab in _CITYSCAPES_LABELS if 0 <= lab.trainId < IGNORE_INDEX),
                                       key=lambda lab: lab.trainId))


def _label_id_to_train_id_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in _CITYSCAPES_LABELS:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < IGNORE_INDEX:
            table[lab.id] = lab.trainId
    return table


# lookup table: train_ids = LABEL_ID_TO_TRAIN_ID[label_ids]
LABEL_ID_TO_TRAIN_ID: np.ndarray = _label_id_to_train_id_table()

# the 8 evaluated classes with instances (person ... bicycle), in train-id order;
# instance datasets use their index in this tuple as the contiguous class id
CITYSCAPES_INSTANCE_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((lab for lab in _CITYSCAPES_LABELS
                                if lab.hasInstances and not lab.ignoreInEval and lab.id >= 0),
                               key=lambda lab: lab.trainId))


def cityscapes_train_id_colors() -> np.ndarray:
    """[256, 3] uint8 palette indexed by train id (255 = ignore -> black)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(CITYSCAPES_TRAIN_COLORS)] = np.array(CITYSCAPES_TRAIN_COLORS, dtype=np.uint8)
    return palette


def cityscapes_label_id_colors() -> np.ndarray:
    """[256, 3] uint8 palette indexed by Cityscapes label id (the *_gtFine_color.png colours)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label_id, color in CITYSCAPES_LABEL_COLOR.items():
        palette[label_id] = color
    return palette


# -------------------------------------------------------------------- CamVid ----------
# The 32 classes of the original CamVid colour labels (class_dict.csv), name -> RGB.
CAMVID32_COLORS: dict[str, tuple[int, int, int]] = {
    "Animal": (64, 128, 64), "Archway": (192, 0, 128), "Bicyclist": (0, 128, 192),
    "Bridge": (0, 128, 64), "Building": (128, 0, 0), "Car": (64, 0, 128),
    "CartLuggagePram": (64, 0, 192), "Child": (192, 128, 64), "Column_Pole": (192, 192, 128),
    "Fence": (64, 64, 128), "LaneMkgsDriv": (128, 0, 192), "LaneMkgsNonDriv": (192, 0, 64),
    "Misc_Text": (128, 128, 64), "MotorcycleScooter": (192, 0, 192), "OtherMoving": (128, 64, 64),
    "ParkingBlock": (64, 192, 128), "Pedestrian": (64, 64, 0), "Road": (128, 64, 128),
    "RoadShoulder": (128, 128, 192), "Sidewalk": (0, 0, 192), "SignSymbol": (192, 128, 128),
    "Sky": (128, 128, 128), "SUVPickupTruck": (64, 128, 192), "TrafficCone": (0, 0, 64),
    "TrafficLight": (0, 64, 64), "Train": (192, 64, 128), "Tree": (128, 128, 0),
    "Truck_Bus": (192, 128, 192), "Tunnel": (64, 0, 64), "VegetationMisc": (192, 192, 0),
    "Void": (0, 0, 0), "Wall": (64, 192, 0),
}

# The 11 evaluated CamVid classes (SegNet order); index = train id, void -> 255.
CAMVID_CLASS_NAMES: tuple[str, ...] = (
    "Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist")
CAMVID_VOID_INDEX = 11  # value of void in the SegNet-style index PNGs

# 32 -> 11 grouping (name of the 32-class label -> index in CAMVID_CLASS_NAMES; absent = void)
CAMVID32_TO_11: dict[str, int] = {
    "Sky": 0,
    "Archway": 1, "Bridge": 1, "Building": 1, "Tunnel": 1, "Wall": 1,
    "Column_Pole": 2, "TrafficCone": 2,
    "Road": 3, "LaneMkgsDriv": 3, "LaneMkgsNonDriv": 3,
    "Sidewalk": 4, "ParkingBlock": 4, "RoadShoulder": 4,
    "Tree": 5, "VegetationMisc": 5,
    "SignSymbol": 6, "Misc_Text": 6, "TrafficLight": 6,
    "Fence": 7,
    "Car": 8, "SUVPickupTruck": 8, "Truck_Bus": 8, "Train": 8, "OtherMoving": 8,
    "Pedestrian": 9, "Child": 9, "CartLuggagePram": 9, "Animal": 9,
    "Bicyclist": 10, "MotorcycleScooter": 10,
}

# Colour of each of the 11 classes in 11-class colour PNGs (the colour of its main 32-class label).
CAMVID_CLASS_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    CAMVID32_COLORS[name] for name in
    ("Sky", "Building", "Column_Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car",
     "Pedestrian", "Bicyclist"))


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def camvid_color_to_train_id(label_rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """Map a CamVid colour label image (HxWx3 RGB, 32-class colours) to 11-class train ids.

    Returns (train ids uint8 HxW with 255 = void, number of pixels whose colour is not one of
    the 32 CamVid colours; those are void too and are counted so nothing is lost silently).
    """
    keys = _rgb_key(label_rgb)
    out = np.full(keys.shape, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(keys.shape, dtype=bool)
    for name, color in CAMVID32_COLORS.items():
        hit = keys == ((color[0] << 16) | (color[1] << 8) | color[2])
        known |= hit
        if name in CAMVID32_TO_11:
            out[hit] = CAMVID32_TO_11[name]
    return out, int((~known).sum())


# Cityscapes label id -> CamVid 32-class name, for writing the synthetic CamVid tree
CITYSCAPES_TO_CAMVID32: dict[str, str] = {
    "road": "Road", "sidewalk": "Sidewalk", "parking": "ParkingBlock", "building": "Building",
    "wall": "Wall", "fence": "Fence", "bridge": "Bridge", "tunnel": "Tunnel", "pole": "Column_Pole",
    "traffic light": "TrafficLight", "traffic sign": "SignSymbol", "vegetation": "Tree",
    "terrain": "VegetationMisc", "sky": "Sky", "person": "Pedestrian", "rider": "Bicyclist",
    "car": "Car", "truck": "Truck_Bus", "bus": "Truck_Bus", "train": "Train",
    "motorcycle": "MotorcycleScooter", "bicycle": "Bicyclist",
}


def cityscapes_label_ids_to_camvid_rgb(label_ids: np.ndarray) -> np.ndarray:
    """Render Cityscapes label ids as a CamVid 32-class colour label image (HxWx3 RGB)."""
    palette = np.zeros((256, 3), dtype=np.uint8)  # unmapped -> Void (black)
    for cs_name, cv_name in CITYSCAPES_TO_CAMVID32.items():
        palette[CITYSCAPES_LABEL_ID[cs_name]] = CAMVID32_COLORS[cv_name]
    return palette[label_ids]


# ------------------------------------------------------------ small objects -----------
# AFMA paper's small-object classes, by name and by train id of each dataset.
CAMVID_SMALL_CLASSES: tuple[str, ...] = ("SignSymbol", "Pedestrian", "Pole", "Bicyclist")
CITYSCAPES_SMALL_CLASSES: tuple[str, ...] = (
    "pole", "traffic light", "traffic sign", "person", "rider", "motorcycle", "bicycle")
CAMVID_SMALL_TRAIN_IDS: tuple[int, ...] = tuple(CAMVID_CLASS_NAMES.index(n) for n in CAMVID_SMALL_CLASSES)
CITYSCAPES_SMALL_TRAIN_IDS: tuple[int, ...] = tuple(
    CITYSCAPES_TRAIN_NAMES.index(n) for n in CITYSCAPES_SMALL_CLASSES)

# ------------------------------------------------------------------ COCO 2017 ----------
# The 80 thing classes of COCO instances (as named in instances_val2017.json), in contiguous order: the
# order detectron2 (and so every SparseInst checkpoint) numbers them, by increasing category id.
COCO_THING_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")
# their category ids in the COCO files (1..90 with 10 ids unused)
COCO_THING_CATEGORY_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
assert len(COCO_THING_NAMES) == len(COCO_THING_CATEGORY_IDS) == 80

# COCO size buckets on mask area in pixels (small < 32^2 <= medium < 96^2 <= large)
COCO_SMALL_MAX_AREA = 32 ** 2
COCO_MEDIUM_MAX_AREA = 96 ** 2


def coco_size_bucket(area: float) -> str:
    """'small', 'medium' or 'large' by the COCO area thresholds."""
    if area < COCO_SMALL_MAX_AREA:
        return "small"
    if area < COCO_MEDIUM_MAX_AREA:
        return "medium"
    return "large"


# ------------------------------------------------------------ synthetic data ----------
# Thing classes of the synthetic street data. COCO category id = Cityscapes label id; the
# contiguous id is the index in this tuple (sorted by category id, which is how the COCO
# reader assigns contiguous ids).
SYNTH_THING_NAMES: tuple[str, ...] = (
    "pole", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bicycle")
SYNTH_STUFF_NAMES: tuple[str, ...] = ("road", "sidewalk", "building", "vegetation", "terrain", "sky")
SYNTH_CATEGORY_IDS: tuple[int, ...] = tuple(CITYSCAPES_LABEL_ID[n] for n in SYNTH_THING_NAMES)
assert list(SYNTH_CATEGORY_IDS) == sorted(SYNTH_CATEGORY_IDS)
