"""Replay a recorded bag into the perception node.

    ros2 launch ros_amf replay.launch.py bag:=/path/to/drive_mcap [rate:=1.0]

The node part is the same graph as `ros-amf run --params launch/replay.yaml`; `ros-amf replay` does the
whole replay (and its speed/accuracy report) without ros2 bag.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="bag directory or .mcap file to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("ros_amf"), "launch",
                                                                  "replay.yaml"]),
                              description="ROS 2 parameter file of the node"),
        Node(package="ros_amf", executable="perception_node", name="ros_amf_perception",
             parameters=[params_file], output="screen"),
        ExecuteProcess(cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate")],
                       output="screen"),
    ])
