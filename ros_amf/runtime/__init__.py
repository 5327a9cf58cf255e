"""Inference runtime shared by the nodes, the bag replay and the evaluators (no ROS in here).

preprocess.py  image -> normalised, padded network input (CPU with OpenCV, any device with torch)
loading.py     config + checkpoint -> eval-mode model, with one-sentence errors; joint-backbone sharing
stages.py      the per-frame work: pre-processing (once per input size) -> model(s) -> post-processing
pipeline.py    Engine: the stages scheduled on threads (and CUDA streams), latest-frame or lossless
cuda.py        CUDA streams and events, pinned staging buffers, stream busy times (no-ops on CPU)
outputs.py     instance-index maps, boxes, label maps, overlays (vectorised)
stats.py       counters, rates and per-stage latency percentiles
benchmark.py   what `ros-amf bench runtime` measures: bare model vs pipelined vs naive, stream overlap, memory
"""
