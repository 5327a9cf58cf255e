"""Networks in plain torch (no ROS, no file I/O): layers, backbones/, sparseinst/ (SparseInst and
AMF-SparseInst) and semantic/ (AFMA on its host networks)."""
