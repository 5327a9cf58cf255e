"""Replay recorded camera streams into a node graph and measure it, in data-flow order:

schedule.py (when to send which frame) -> harness.py (the one rclpy harness: start the graph, publish,
listen) -> monitor.py (match outputs by stamp, metrics) and resources.py (CPU/RSS from /proc) ->
accuracy.py (offline and streaming AP / mIoU) -> peak.py (peak rate search) -> benchmark.py (one
graph's benchmark; pipelined vs naive node) -> session.py (a bag through one or more graphs, used by
``ros-amf replay`` and ``ros-amf demo``) -> report.py (table, JSON, plots, comparison).
Only harness.py imports rclpy; bags are read by ros_amf.bags.
"""
