"""ros_amf: real-time instance (AMF-SparseInst) and semantic (AFMA) segmentation for ROS 2."""

__version__ = "0.1.0"
