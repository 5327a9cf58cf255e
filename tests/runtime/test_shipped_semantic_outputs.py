"""The shipped semantic checkpoint (FPN + AFMA) gives the outputs it was shipped with.

Two checks on three synthetic street frames: (1) the AFMA the runtime runs equals the paper-literal
reference (tests/afma_reference.py: full A, unfold/fold, per-class one-hot) on the checkpoint's
own weights and host logits; (2) the logits and labels equal the ones recorded in
``data/fpn_afma_r18slim_outputs.npz`` before AFMA was vectorised (issue 18), up to float noise.
Regenerate that file only for a new checkpoint: ``python tests/runtime/test_shipped_semantic_outputs.py``.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from ros_amf.contract.input_size import InputSize
from ros_amf.data.synthetic.render import render_still
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.preprocess import preprocess_numpy

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "data" / "fpn_afma_r18slim_outputs.npz"
MODELS = HERE.parents[1] / "models"
FRAMES = (1, 3, 7)


def _model():
    return load_model("semantic", MODELS / "fpn_afma_r18slim.yaml", MODELS / "fpn_afma_r18slim.pt")


def _inputs(loaded):
    batch = [preprocess_numpy(render_still(seed=0, index=i).image, "rgb8", InputSize(480, 640),
                              pixels=loaded.module.cfg.pixel_normalisation)[0] for i in FRAMES]
    return torch.cat(batch)


def frame_outputs(loaded) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    with torch.no_grad():
        out = loaded.module(_inputs(loaded))
    logits = out["logits"]
    return {"labels": logits.argmax(1).to(torch.uint8).numpy(),
            "logits_sub": logits[..., ::32, ::32].numpy(),     # every 32nd pixel: the file stays small
            "class_sums": logits.double().sum((0, 2, 3)).numpy()}


@pytest.fixture(scope="module")
def shipped():
    return _model()


def test_runtime_afma_equals_the_paper_literal_reference_on_the_shipped_weights(shipped):
    from tests.afma_reference import naive_forward
    images = _inputs(shipped)
    module = shipped.module
    with torch.no_grad():
        out = module(images)
        features = module.encoder(images)
        reference, _ = naive_forward(module.afma, images, features, out["host_logits"])
    relative = ((out["logits"] - reference).norm() / reference.norm()).item()
    assert relative <= 1e-5
    assert not torch.equal(out["logits"], out["host_logits"])      # AFMA does change the logits
    assert (out["logits"].argmax(1) == reference.argmax(1)).float().mean() >= 0.9999


def test_outputs_equal_the_recorded_ones(shipped):
    recorded = np.load(RECORDED)
    now = frame_outputs(shipped)
    assert (now["labels"] == recorded["labels"]).mean() >= 0.9999
    np.testing.assert_allclose(now["logits_sub"], recorded["logits_sub"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(now["class_sums"], recorded["class_sums"], rtol=1e-5)


if __name__ == "__main__":
    np.savez_compressed(RECORDED, **frame_outputs(_model()))
    print(f"wrote {RECORDED}")
