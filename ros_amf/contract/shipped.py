"""The shipped model pair that the launch files, the demo, the benchmarks and the node's parameters default to.

One place to change when a better checkpoint ships (models/README.md says why these two were chosen);
tests/runtime/test_shipped_models.py checks that the launch files name the same files.
"""
from typing import NamedTuple


class ShippedModel(NamedTuple):
    config: str       # relative to the repository root (or the installed share/ros_amf)
    checkpoint: str


INSTANCE = ShippedModel("models/amf_sparseinst_r18slim.yaml", "models/amf_sparseinst_r18slim.pt")
SEMANTIC = ShippedModel("models/fpn_afma_effl0.yaml", "models/fpn_afma_effl0.pt")
DEFAULTS = {"instance": INSTANCE, "semantic": SEMANTIC}
