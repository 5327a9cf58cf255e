"""Several cameras, one node: ros_amf_multi_camera serves every camera of its `cameras` parameter with one
copy of each model, the latest frame of each camera batched into one forward.

Camera c reads /c/image_raw and writes /c/instances, /c/labels, /c/stats, ... (topic names are relative to
the node's namespace, here the root). One node per camera instead: multi_camera_per_node.launch.py.

    ros2 launch ros_amf multi_camera.launch.py [params_file:=...] [respawn:=true] [respawn_delay:=2.0]

With respawn:=true launch restarts the node whenever it exits, after respawn_delay seconds.

Same node graph as `ros-amf run --params launch/multi_camera.yaml` (cameras are listed in that file).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def multi_camera_node(context):
    # launch takes respawn_delay only as a number, so it is read from its argument when the file runs
    delay = float(LaunchConfiguration("respawn_delay").perform(context))
    return [Node(package="ros_amf", executable="multi_camera_node", name="ros_amf_multi_camera", namespace="",
                 parameters=[LaunchConfiguration("params_file")], output="screen",
                 respawn=LaunchConfiguration("respawn"), respawn_delay=delay)]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("ros_amf"), "launch",
                                                                  "multi_camera.yaml"]),
                              description="ROS 2 parameter file of the node"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart the node when it exits"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a restart"),
        OpaqueFunction(function=multi_camera_node),
    ])
