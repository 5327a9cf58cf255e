"""INT8 post-training quantisation of an exported graph through NNCF, for backend ``openvino-int8``.

The ONNX graph of ``backends_export`` is converted to OpenVINO IR and quantised by ``nncf.quantize``
(8-bit weights and activations of the convolutions; MatMuls stay fp32, see ``_quantize_options``),
activation ranges calibrated on synthetic street frames (``ros_amf.data.synthetic``: the scenes the
shipped models were trained on), pre-processed exactly as the runtime feeds the model (its own pixel
normalisation, at the graph's fixed input shape). The result is cached beside the fp32 artefacts, keyed
also by NNCF's version and the calibration set, so a restart does not calibrate again.

INT8 trades accuracy for speed, so the graph is not held to the fp32 tolerance of
``check_reproduces``: ``check_int8`` only rejects a broken graph (wrong shapes, NaN, or outputs whose
error is comparable to the outputs themselves). The accuracy cost is measured by ``ros-amf eval``
with ``--backend openvino-int8`` (README "Inference backends").
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from ros_amf.contract.input_size import InputSize
from ros_amf.contract.pixels import PixelNormalisation
from ros_amf.runtime.preprocess import preprocess_numpy

NNCF_PIN = "nncf==3.4.0"
CALIBRATION_FRAMES = 100
CALIBRATION_SEED = 1001          # not the seeds of the evaluation splits
# a broken graph gives errors as large as the outputs; INT8 rounding stays well below (measured: <= 0.04)
MAX_RELATIVE_RMS = 0.35


def _quantize_options() -> dict:
    # Measured on the shipped instance model (2 street frames, relative RMS error of pred_logits / pred_masks /
    # pred_scores): NNCF's CNN defaults 0.63 / 1.15 / 0.91 (sigmoid scores off by up to 0.97: broken), which
    # also quantise the inputs of the element-wise attention products (SimAM, FEM); the TRANSFORMER pattern
    # set alone 0.09 / 0.06 / 0.20; with the MatMuls (instance activation maps, mask kernels x features,
    # AFMA's attention) kept in fp32 as well 0.013 / 0.021 / 0.020. The convolutions, nearly all the
    # arithmetic, run in INT8 either way.
    import nncf
    return {"model_type": nncf.ModelType.TRANSFORMER, "ignored_scope": nncf.IgnoredScope(types=["MatMul"])}


def nncf_version() -> str:
    """NNCF's version; ImportError (one sentence) when it is not installed."""
    try:
        import nncf
    except ImportError as exc:
        raise ImportError(f"backend 'openvino-int8' needs NNCF ({exc}); install it with 'pip install {NNCF_PIN}' "
                          "or use backend openvino.") from None
    return str(nncf.__version__)


def calibration_key() -> dict:
    return {"frames": CALIBRATION_FRAMES, "seed": CALIBRATION_SEED,
            "source": "ros_amf.data.synthetic.render.render_still",
            "options": "TRANSFORMER patterns, MatMul in fp32"}


def calibration_inputs(hw: tuple[int, int], pixels: PixelNormalisation, count: int | None = None) -> list[np.ndarray]:
    """``count`` (default ``CALIBRATION_FRAMES``) synthetic street frames of size ``hw``, pre-processed (no
    resize) as the runtime does."""
    from ros_amf.data.synthetic.render import render_still
    count = CALIBRATION_FRAMES if count is None else count
    height, width = hw
    size = InputSize(max(32, min(hw)), max(hw))
    return [preprocess_numpy(render_still(CALIBRATION_SEED, i, width=width, height=height).image, "rgb8", size,
                             pixels=pixels)[0].numpy() for i in range(count)]


def quantize_to_ir(onnx_path: Path, folder: Path, hw: tuple[int, int], pixels: PixelNormalisation,
                   count: int | None = None) -> Path:
    """Quantise the ONNX graph at ``onnx_path`` to INT8 OpenVINO IR in ``folder``; returns the .xml path."""
    nncf_version()
    import nncf
    import openvino as ov
    model = ov.convert_model(str(onnx_path))
    data = calibration_inputs(hw, pixels, count)
    quiet = logging.getLogger("nncf")
    level = quiet.level
    quiet.setLevel(logging.ERROR)   # NNCF logs each statistics pass and draws progress bars
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), **_quantize_options())
    finally:
        quiet.setLevel(level)
    path = folder / "model.xml"
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def check_int8(reference: list[np.ndarray], outputs: list[np.ndarray], names: tuple[str, ...], what: str) -> float:
    """Raise with one sentence when an INT8 graph is broken; return its worst relative RMS error."""
    worst = 0.0
    for name, ref, got in zip(names, reference, outputs):
        if ref.shape != got.shape or not np.isfinite(got).all():
            raise RuntimeError(f"{what} is broken: output '{name}' has shape {got.shape} (torch: {ref.shape}) or "
                               "holds NaN/inf; use backend openvino.")
        scale = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) or 1.0
        error = float(np.sqrt(np.mean((ref.astype(np.float64) - got) ** 2))) / scale
        if error > MAX_RELATIVE_RMS:
            raise RuntimeError(f"{what} is broken: output '{name}' is off by {error:.2f} of its own size "
                               f"(> {MAX_RELATIVE_RMS}) on a synthetic frame; use backend openvino.")
        worst = max(worst, error)
    return worst


__all__ = ["CALIBRATION_FRAMES", "calibration_inputs", "calibration_key", "check_int8", "nncf_version",
           "quantize_to_ir"]
