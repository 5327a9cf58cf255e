"""ROS 2 layer: nodes, node kinds, message conversions, QoS, parameters, launcher. With replay/harness.py the
only code that imports rclpy."""
