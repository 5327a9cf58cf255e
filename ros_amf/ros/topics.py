"""Topic names of the perception nodes (the team contract; launch files and tests use these).

Every name a node uses is relative, the image_pipeline way: pushed into a namespace (``/front``) the
node reads ``/front/image`` and writes ``/front/instances``; ``-r image:=/my/camera`` remaps one name.
Only ``/diagnostics`` is absolute (the aggregator listens there) and the re-stamped camera info is
private (it is this node's copy, ``camera_info`` next to the outputs is the camera's own).
"""

# inputs (defaults of the parameters input_topic / camera_info_topic)
IMAGE = "image"
COMPRESSED_SUFFIX = "/compressed"   # image_transport's compressed transport: <image>/compressed
CAMERA_INFO = "camera_info"

# outputs, beside the inputs in the node's namespace
INSTANCES = "instances"
INSTANCE_IDS = "instance_ids"
LABELS = "labels"
INSTANCE_LABEL_INFO = "instance_label_info"
SEMANTIC_LABEL_INFO = "semantic_label_info"
OVERLAY = "overlay"
# the standard vision_msgs outputs: Detection2DArray beside `instances`, and a vision_msgs/LabelInfo
# (latched) under each result topic it describes
DETECTIONS = "detections"
DETECTIONS_LABEL_INFO = "detections/label_info"
LABELS_LABEL_INFO = "labels/label_info"
STATS = "stats"
CAMERA_INFO_OUT = "~/camera_info"   # the input CameraInfo, re-stamped to match each output
DIAGNOSTICS = "/diagnostics"

# the relative outputs, in the order tools list them
OUTPUTS = (INSTANCES, INSTANCE_IDS, LABELS, INSTANCE_LABEL_INFO, SEMANTIC_LABEL_INFO, OVERLAY, STATS,
           DETECTIONS, DETECTIONS_LABEL_INFO, LABELS_LABEL_INFO)

# where the bundled tools (demo, replay, launch files) put the camera: a driver's usual names
CAMERA_IMAGE = "/camera/image_raw"
CAMERA_CAMERA_INFO = "/camera/camera_info"

NODE_PERCEPTION = "ros_amf_perception"
NODE_INSTANCE = "ros_amf_instance"
NODE_SEMANTIC = "ros_amf_semantic"
NODE_NAIVE = "ros_amf_naive"      # the benchmarks' baseline (ros/naive_node.py)
NODE_MULTI_CAMERA = "ros_amf_multi_camera"   # N cameras, one model copy (ros/multi_camera_node.py)
