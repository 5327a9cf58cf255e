"""Fail set-up loudly when the venv cannot import what ros_amf needs (one line per problem)."""
import importlib
import importlib.util
import sys

REQUIRED = {
    "torch": "torch==2.13.0", "numpy": "numpy", "scipy": "scipy", "yaml": "PyYAML", "cv2": "opencv-python-headless",
    "simplejpeg": "simplejpeg",
    "pycocotools.mask": "pycocotools", "cityscapesscripts.helpers.labels": "cityscapesScripts",
    "rosbags.rosbag2": "rosbags", "matplotlib": "matplotlib", "tqdm": "tqdm", "pytest": "pytest",
    "rclpy": "ros-rclpy + ros-rmw-fastrtps-cpp", "sensor_msgs.msg": "ros-sensor-msgs",
    "diagnostic_msgs.msg": "ros-diagnostic-msgs",
}
if "--msgs" in sys.argv:
    REQUIRED = {"ros_amf_msgs.msg": "the interface package in msg/ (tools/build_msgs.sh)"}
if "--vision-msgs" in sys.argv:
    REQUIRED = {"vision_msgs.msg": "a ROS install's vision_msgs or msg/vision_msgs (tools/build_msgs.sh)"}
if "--vision-msgs-elsewhere" in sys.argv:
    # exit 0 when vision_msgs comes from outside this venv (a sourced ROS install): then it is not built here
    import os
    try:
        spec = importlib.util.find_spec("vision_msgs")
    except Exception:  # a broken package on the path counts as none
        spec = None
    location = os.path.realpath(spec.origin) if spec is not None and spec.origin else ""
    sys.exit(0 if location and not location.startswith(os.path.realpath(sys.prefix) + os.sep) else 1)

problems = []
for module, source in REQUIRED.items():
    try:
        importlib.import_module(module)
    except Exception as exc:  # any import failure is a broken set-up
        problems.append(f"error: cannot import '{module}' (from {source}): {type(exc).__name__}: {exc}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    print("Set-up is incomplete: fix the line(s) above (a typo in requirements.txt?) and run 'make setup' again.",
          file=sys.stderr)
    sys.exit(1)
