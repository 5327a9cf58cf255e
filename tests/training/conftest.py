"""Fixtures of the training tests."""
import pytest

from ros_amf.data.synthetic.dataset import make_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Four synthetic frames (3 train, 1 val) in every layout make-data writes (coco/, cityscapes/, ...)."""
    out = tmp_path_factory.mktemp("synth")
    make_dataset(out, frames=4, seed=3, val_fraction=0.25, size=(128, 96), progress=False)
    return out
