"""Semantic segmentation: AFMA (afma.py, the paper's equations), its loss, and the host networks (decoders/)."""
