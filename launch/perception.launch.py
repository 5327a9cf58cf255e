"""One camera: the combined perception node (instances + label map) in the camera's namespace, optionally rviz.

    ros2 launch ros_amf perception.launch.py [params_file:=...] [rviz:=true] [fixed_frame:=camera_optical]

Every topic name of the node is relative: in the namespace 'camera' it reads /camera/image_raw and
/camera/camera_info and writes /camera/instances, /camera/labels, /camera/overlay, ... rviz2 runs in
the same namespace with relative topics, so it follows. The node is a lifecycle node that configures
and activates itself (autostart: true); set autostart: false to drive it with a lifecycle manager.
Same node graph as `ros-amf run --params launch/perception.yaml`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

NAMESPACE = "camera"   # the parameter file's section is /camera/ros_amf_perception


def generate_launch_description():
    share = FindPackageShare("ros_amf")
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "launch", "perception.yaml"]),
                              description="ROS 2 parameter file of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2 with ros_amf.rviz"),
        DeclareLaunchArgument("fixed_frame", default_value="camera", description="rviz2's fixed frame"),
        Node(package="ros_amf", executable="perception_node", name="ros_amf_perception", namespace=NAMESPACE,
             parameters=[params_file], output="screen"),
        Node(package="rviz2", executable="rviz2", name="rviz2", namespace=NAMESPACE,
             condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", PathJoinSubstitution([share, "launch", "ros_amf.rviz"]),
                        "-f", LaunchConfiguration("fixed_frame")]),
    ])
