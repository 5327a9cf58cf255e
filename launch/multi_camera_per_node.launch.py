"""Several cameras, one perception node per camera (own model copies), each in the camera's namespace.

The batched alternative, one node and one model copy for all cameras, is multi_camera.launch.py.

Topic names are relative, so the node in /front reads /front/image_raw and writes /front/instances, ...

    ros2 launch ros_amf multi_camera_per_node.launch.py [respawn:=true] [respawn_delay:=2.0]

With respawn:=true launch restarts a camera's node whenever it exits, after respawn_delay seconds.

Same node graph as `ros-amf run --params launch/multi_camera_per_node.yaml` (add cameras in both files).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

CAMERAS = ["front", "rear", "left"]


def camera_nodes(context):
    # launch takes respawn_delay only as a number, so it is read from its argument when the file runs
    delay = float(LaunchConfiguration("respawn_delay").perform(context))
    return [Node(package="ros_amf", executable="perception_node", name="ros_amf_perception", namespace=camera,
                 parameters=[LaunchConfiguration("params_file")], output="screen",
                 respawn=LaunchConfiguration("respawn"), respawn_delay=delay) for camera in CAMERAS]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("ros_amf"), "launch",
                                                                  "multi_camera_per_node.yaml"]),
                              description="ROS 2 parameter file of the nodes"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart a node when it exits"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a restart"),
        OpaqueFunction(function=camera_nodes),
    ])
