"""ROS 2 layer: nodes, message conversions, QoS, parameters. The only package that imports rclpy."""
