"""Inference runtime shared by the nodes, the bag replay and the evaluators (no ROS in here).

preprocess.py  image -> normalised, padded network input (CPU with OpenCV, any device with torch)
models.py      config + checkpoint -> eval-mode model, with one-sentence errors; joint-backbone sharing
engine.py      pre-processing -> model(s) -> post-processing, pipelined (threads on CPU, streams on CUDA)
outputs.py     instance-index maps, boxes, label maps, overlays (vectorised)
stats.py       counters, rates and per-stage latency percentiles
bench.py       `ros-amf bench runtime`: bare model vs pipelined vs naive, GPU stream overlap, memory
"""
