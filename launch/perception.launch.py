"""One camera: the combined perception node (instances + label map), optionally rviz.

    ros2 launch ros_amf perception.launch.py [params_file:=...] [rviz:=true]

Same node graph as `ros-amf run --params launch/perception.yaml`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("ros_amf")
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "launch", "perception.yaml"]),
                              description="ROS 2 parameter file of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2 with ros_amf.rviz"),
        Node(package="ros_amf", executable="perception_node", name="ros_amf_perception",
             parameters=[params_file], output="screen"),
        Node(package="rviz2", executable="rviz2", name="rviz2", condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", PathJoinSubstitution([share, "launch", "ros_amf.rviz"])]),
    ])
