"""Replay a recorded bag into the perception node.

    ros2 launch ros_amf replay.launch.py bag:=/path/to/drive_mcap [rate:=1.0] [respawn:=true] [respawn_delay:=2.0]

The node part is the same graph as `ros-amf run --params launch/replay.yaml`; `ros-amf replay` does the
whole replay (and its speed/accuracy report) without ros2 bag. The player starts once the node logs that
it is listening (loading and warming the models takes seconds, and frames published before the node
subscribes are lost). respawn:=true restarts the node (not the player) when it exits.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessIO
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def perception_node_then_player(context):
    # launch takes respawn_delay only as a number, so it is read from its argument when the file runs
    node = Node(package="ros_amf", executable="perception_node", name="ros_amf_perception",
                parameters=[LaunchConfiguration("params_file")], output="screen",
                respawn=LaunchConfiguration("respawn"),
                respawn_delay=float(LaunchConfiguration("respawn_delay").perform(context)))
    started = []

    def play_once_listening(event):
        # the node logs "listening on <topic>" once subscribed (a respawn logs it again: one player only)
        if started or b"listening on" not in event.text:
            return None
        started.append(True)
        return [ExecuteProcess(cmd=["ros2", "bag", "play", LaunchConfiguration("bag"),
                                    "--rate", LaunchConfiguration("rate")], output="screen")]
    return [node, RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=play_once_listening,
                                                   on_stderr=play_once_listening))]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="bag directory or .mcap file to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("ros_amf"), "launch",
                                                                  "replay.yaml"]),
                              description="ROS 2 parameter file of the node"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart the node when it exits"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a restart"),
        OpaqueFunction(function=perception_node_then_player),
    ])
