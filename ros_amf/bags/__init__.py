"""Camera bags without ROS: read and write them with ``rosbags``, and the ground truth kept beside them.

Import from here (``from ros_amf.bags import BagReader``), not from the modules:
- reader: ``BagReader`` over ROS 2 (sqlite3, mcap) and ROS 1 bags, frames as ``BagImage``, and the
  ``BagError`` family that says what is wrong with a bag;
- writer: ``BagWriter`` for ROS 2 bags (sqlite3, mcap) of Image, CompressedImage and CameraInfo;
- ground_truth: the sidecar folder keyed by header stamp (``GroundTruthWriter``, ``load_bag_ground_truth``).
"""
from ros_amf.bags.ground_truth import (GROUND_TRUTH_DIR, GroundTruthWriter, ground_truth_coco_path,
                                       load_bag_ground_truth)
from ros_amf.bags.reader import (DEFAULT_IMAGE_TOPIC, BagError, BagImage, BagNotFoundError, BagReader, CorruptBagError,
                                 TopicInfo, TopicNotFoundError, UnsupportedEncodingError, UnsupportedMessageTypeError,
                                 list_topics, read_images)
from ros_amf.bags.writer import BagWriter

__all__ = [
    # reader
    "BagReader", "BagImage", "TopicInfo", "DEFAULT_IMAGE_TOPIC", "list_topics", "read_images",
    "BagError", "BagNotFoundError", "CorruptBagError", "TopicNotFoundError", "UnsupportedEncodingError",
    "UnsupportedMessageTypeError",
    # writer
    "BagWriter",
    # ground-truth sidecar
    "GROUND_TRUTH_DIR", "GroundTruthWriter", "ground_truth_coco_path", "load_bag_ground_truth",
]
