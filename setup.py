from pathlib import Path

from setuptools import find_packages, setup

package_name = "ros_amf"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["ros_amf", "ros_amf.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", [str(p) for p in Path("launch").glob("*") if p.is_file()]),
        ("share/" + package_name + "/models", [str(p) for p in Path("models").glob("*") if p.is_file()]),
    ],
    install_requires=["numpy", "pyyaml"],
    zip_safe=True,
    maintainer="ros_amf developers",
    maintainer_email="dev@ros-amf.org",
    description="Real-time AMF-SparseInst instance and AFMA semantic segmentation nodes for ROS 2.",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        "ros-amf = ros_amf.apps.cli:main",
        # Executables that launch files start with `ros2 run` / launch_ros Node(executable=...); one per
        # node kind in ros_amf/ros/kinds.py (tests/test_package_layers.py checks they agree).
        "perception_node = ros_amf.ros.node:main_perception",
        "instance_node = ros_amf.ros.node:main_instance",
        "semantic_node = ros_amf.ros.node:main_semantic",
        "naive_node = ros_amf.ros.naive_node:main",
        "multi_camera_node = ros_amf.ros.multi_camera_node:main",
    ]},
)
