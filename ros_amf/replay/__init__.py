"""Bag reading, replay and the replay benchmark, in data-flow order:

reader.py (bag -> BagImage, no rclpy) -> replay.py (when to send which frame) -> rclpy_replay.py
(publish / listen over rclpy, start the graph) -> monitor.py (match outputs by stamp, metrics) and
resources.py (CPU/RSS from /proc) -> accuracy.py (offline and streaming AP / mIoU) -> peak.py (peak
rate search) -> rclpy_benchmark.py (one graph's benchmark) -> report.py (table, JSON, plots,
comparison) -> replay_cli.py (`ros-amf replay`). Only the rclpy_* modules import rclpy.
"""
