"""Topic names of the perception nodes (the team contract; launch files and tests use these)."""

IMAGE = "/camera/image_raw"
CAMERA_INFO = "/camera/camera_info"
DIAGNOSTICS = "/diagnostics"

# in the node's private namespace
INSTANCES = "~/instances"
INSTANCE_IDS = "~/instance_ids"
LABELS = "~/labels"
INSTANCE_LABEL_INFO = "~/instance_label_info"
SEMANTIC_LABEL_INFO = "~/semantic_label_info"
OVERLAY = "~/overlay"
STATS = "~/stats"
CAMERA_INFO_OUT = "~/camera_info"   # the input CameraInfo, re-stamped to match each output

NODE_PERCEPTION = "ros_amf_perception"
NODE_INSTANCE = "ros_amf_instance"
NODE_SEMANTIC = "ros_amf_semantic"
NODE_NAIVE = "ros_amf_naive"      # the benchmarks' baseline (ros/naive_node.py)
