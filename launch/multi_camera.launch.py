"""Several cameras: one perception node per camera, each in the camera's namespace.

Topic names are relative, so the node in /front reads /front/image_raw and writes /front/instances, ...

    ros2 launch ros_amf multi_camera.launch.py

Same node graph as `ros-amf run --params launch/multi_camera.yaml` (add cameras in both files).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

CAMERAS = ["front", "rear"]


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    nodes = [Node(package="ros_amf", executable="perception_node", name="ros_amf_perception", namespace=camera,
                  parameters=[params_file], output="screen") for camera in CAMERAS]
    return LaunchDescription([
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("ros_amf"), "launch",
                                                                  "multi_camera.yaml"]),
                              description="ROS 2 parameter file of the nodes"),
        *nodes,
    ])
