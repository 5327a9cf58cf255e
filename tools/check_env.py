"""Fail set-up loudly when the venv cannot import what ros_amf needs (one line per problem)."""
import importlib
import sys

REQUIRED = {
    "torch": "torch==2.13.0", "numpy": "numpy", "scipy": "scipy", "yaml": "PyYAML", "cv2": "opencv-python-headless",
    "pycocotools.mask": "pycocotools", "cityscapesscripts.helpers.labels": "cityscapesScripts",
    "rosbags.rosbag2": "rosbags", "matplotlib": "matplotlib", "tqdm": "tqdm", "pytest": "pytest",
    "rclpy": "ros-rclpy + ros-rmw-fastrtps-cpp", "sensor_msgs.msg": "ros-sensor-msgs",
    "diagnostic_msgs.msg": "ros-diagnostic-msgs",
}
if "--msgs" in sys.argv:
    REQUIRED = {"ros_amf_msgs.msg": "the interface package in msg/ (tools/build_msgs.sh)"}

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
