"""One camera: the combined perception node (instances + label map) in the camera's namespace, optionally rviz.

    ros2 launch ros_amf perception.launch.py [params_file:=...] [rviz:=true] [fixed_frame:=camera_optical]
                                             [respawn:=true] [respawn_delay:=2.0]

Every topic name of the node is relative: in the namespace 'camera' it reads /camera/image_raw and
/camera/camera_info and writes /camera/instances, /camera/labels, /camera/overlay, ... rviz2 runs in
the same namespace with relative topics, so it follows. The node is a lifecycle node that configures
and activates itself (autostart: true); set autostart: false to drive it with a lifecycle manager.
With respawn:=true launch restarts the node whenever it exits (a crash, an out-of-memory kill) after
respawn_delay seconds; SIGINT / SIGTERM from launch itself stop it for good, final stats published.
Same node graph as `ros-amf run --params launch/perception.yaml`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

NAMESPACE = "camera"   # the parameter file's section is /camera/ros_amf_perception


def perception_node(context):
    # launch takes respawn_delay only as a number, so it is read from its argument when the file runs
    return [Node(package="ros_amf", executable="perception_node", name="ros_amf_perception", namespace=NAMESPACE,
                 parameters=[LaunchConfiguration("params_file")], output="screen",
                 respawn=LaunchConfiguration("respawn"),
                 respawn_delay=float(LaunchConfiguration("respawn_delay").perform(context)))]


def generate_launch_description():
    share = FindPackageShare("ros_amf")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "launch", "perception.yaml"]),
                              description="ROS 2 parameter file of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2 with ros_amf.rviz"),
        DeclareLaunchArgument("fixed_frame", default_value="camera", description="rviz2's fixed frame"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart the node when it exits"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a restart"),
        OpaqueFunction(function=perception_node),
        Node(package="rviz2", executable="rviz2", name="rviz2", namespace=NAMESPACE,
             condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", PathJoinSubstitution([share, "launch", "ros_amf.rviz"]),
                        "-f", LaunchConfiguration("fixed_frame")]),
    ])
