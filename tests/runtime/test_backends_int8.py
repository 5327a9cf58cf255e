"""Backend openvino-int8 (runtime.int8, issue 17 stretch): an NNCF-quantised graph of the shipped instance model,
calibrated on synthetic street frames, cached like the fp32 artefacts, close to torch; broken graphs and a
missing NNCF are said in one sentence."""
from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from ros_amf.runtime import int8
from ros_amf.runtime.backends import BackendForward, backend_version, resolve_backend
from ros_amf.runtime.backends_export import sample_input
from ros_amf.runtime.loading import load_model

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_PT = ROOT / "models" / "amf_sparseinst_r18slim.pt"
HW = (128, 160)


def installed() -> bool:
    try:
        backend_version("openvino-int8")
        return True
    except ImportError:
        return False


def installed_openvino() -> bool:
    try:
        backend_version("openvino")
        return True
    except ImportError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not installed(), reason="openvino and nncf are not installed")
def test_int8_graph_is_quantised_cached_and_close_to_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(int8, "CALIBRATION_FRAMES", 12)      # the shipped default is 100; a test needs fewer
    module = load_model("instance", None, INSTANCE_PT).module.eval()
    warnings: list[str] = []
    forward = BackendForward("openvino-int8", module, "instance model", warnings, cache=tmp_path)
    forward.prepare(HW)
    event, = forward.cache_events
    assert event["openvino-int8"] == "missing"                 # calibrated and quantised now
    entry = next(tmp_path.glob("graphs/*/instance-128x160/openvino-int8-*"))
    import openvino as ov
    ops = {op.get_type_name() for op in ov.Core().read_model(str(entry / "model.xml")).get_ops()}
    assert "FakeQuantize" in ops                               # really INT8, not the fp32 graph again
    images = torch.from_numpy(sample_input(HW, seed=9))
    with torch.inference_mode():
        reference, outputs = module(images), forward(images)
    assert forward.fallback_reason is None and warnings == []
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        error = float((outputs[key] - reference[key]).pow(2).mean().sqrt() / reference[key].pow(2).mean().sqrt())
        assert error < 0.15, (key, error)
    again = BackendForward("openvino-int8", module, "instance model", [], cache=tmp_path)
    again.prepare(HW)
    assert again.cache_events[0]["openvino-int8"] == "cached"    # a restart does not calibrate again


def test_a_broken_int8_graph_is_refused_in_one_sentence():
    reference = [np.linspace(-3, 3, 100, dtype=np.float32).reshape(1, 100)]
    with pytest.raises(RuntimeError, match="is off by .* of its own size"):
        int8.check_int8(reference, [-reference[0]], ("logits",), "the int8 graph")
    with pytest.raises(RuntimeError, match="holds NaN/inf"):
        int8.check_int8(reference, [np.full_like(reference[0], np.nan)], ("logits",), "the int8 graph")
    assert int8.check_int8(reference, [reference[0] * 1.01], ("logits",), "the int8 graph") < 0.02


def test_missing_nncf_falls_back_to_torch_naming_the_package(monkeypatch):
    real_import = builtins.__import__

    def no_nncf(name, *args, **kwargs):
        if name == "nncf" or name.startswith("nncf."):
            raise ImportError("No module named 'nncf'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_nncf)
    if not installed_openvino():
        pytest.skip("openvino is not installed")
    backend, warnings = resolve_backend("openvino-int8", torch.device("cpu"), "fp32", False)
    assert backend == "torch" and len(warnings) == 1
    assert "pip install nncf==3.4.0" in warnings[0] and warnings[0].endswith("Running the torch forward instead.")
    assert resolve_backend("auto", torch.device("cpu"), "fp32", False)[0] != "openvino-int8"   # never the default
