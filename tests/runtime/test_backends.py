"""Inference backends (runtime.backends): equal outputs to torch on the shipped checkpoints, the disk
cache (reuse, stale and corrupt entries rebuilt), fallbacks to torch, threads, and the export command."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ros_amf.apps import export as export_app
from ros_amf.runtime.backends import BACKENDS, BackendForward, backend_installed, backend_version
from ros_amf.runtime.backends_cache import get_or_build, inspect_entry
from ros_amf.runtime.benchmark import equality_frames, result_equality
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.pipeline import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_PT = ROOT / "models" / "amf_sparseinst_r18slim.pt"
SEMANTIC_PT = ROOT / "models" / "fpn_afma_r18slim.pt"
# the fp32 backends, held to equal outputs; openvino-int8 trades accuracy for speed (test_backends_int8.py)
COMPILED = [b for b in BACKENDS if b not in ("torch", "openvino-int8")]


installed = backend_installed     # backend name -> bool


@pytest.fixture(scope="module")
def cache(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("ros_amf_cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("ROS_AMF_CACHE", str(folder))
    request.addfinalizer(patch.undo)
    return folder


@pytest.fixture(scope="module")
def models():
    return {"instance": load_model("instance", None, INSTANCE_PT), "semantic": load_model("semantic", None, SEMANTIC_PT)}


@pytest.fixture(scope="module")
def frames():
    return equality_frames(3, 480, 640, seed=5)


def run_engine(models, frames, backend: str) -> tuple[Engine, list]:
    engine = Engine(EngineConfig(backend=backend, keep_masks=True, inference_workers=1, lossless=True),
                    models["instance"], models["semantic"])
    return engine, [engine.process(frame, "rgb8") for frame in frames]


@pytest.fixture(scope="module")
def torch_results(models, frames):
    return run_engine(models, frames, "torch")[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", COMPILED)
def test_backend_reproduces_torch_on_shipped_checkpoints(backend, cache, models, frames, torch_results):
    if not installed(backend):
        pytest.fail(f"{backend} is pinned in requirements.txt but not installed; run make setup.")
    engine, results = run_engine(models, frames, backend)
    assert engine.stages.backend == backend
    assert not [w for w in engine.warnings if "torch forward instead" in w], engine.warnings
    assert all(r.error is None for r in results)
    equality = result_equality(torch_results, results, engine.config.score_threshold, min_iou=0.95,
                               score_tolerance=0.01)
    assert equality["instances"] >= 10, "the synthetic frames should hold real instances"
    assert equality["semantic_agreement_min"] >= 0.995, equality
    assert equality["unmatched"] == 0, equality
    assert equality["matched"] + equality["borderline"] >= equality["instances"], equality
    assert equality["min_mask_iou"] >= 0.95 and equality["max_score_diff"] <= 0.01, equality
    # both graphs were built into the cache, and a second engine finds them there
    again = Engine(EngineConfig(backend=backend, inference_workers=1), models["instance"], models["semantic"])
    again.warm_up(480, 640)
    events = [event for _, forward in again.stages.runs for event in forward.cache_events]
    assert events and all(e["onnx"] == "cached" and e[backend] == "cached" for e in events), events


def test_cache_entry_is_reused_and_stale_or_corrupt_entries_are_rebuilt(tmp_path):
    builds = []

    def build(folder: Path) -> dict:
        builds.append(folder)
        (folder / "graph.bin").write_bytes(b"compiled graph %d" % len(builds))
        return {"note": "built"}
    key = {"weights_sha256": "ab" * 32, "input_hw": [384, 512], "backend_version": "1.0"}
    entry = tmp_path / "entry"
    assert get_or_build(entry, key, build).rebuilt_because == "missing"
    assert get_or_build(entry, key, build).rebuilt_because is None and len(builds) == 1
    # corrupt: a truncated file is never trusted
    (entry / "graph.bin").write_bytes(b"compiled")
    assert inspect_entry(entry, key)[1] == "corrupt"
    result = get_or_build(entry, key, build)
    assert result.rebuilt_because == "corrupt" and (entry / "graph.bin").read_bytes() == b"compiled graph 2"
    # stale: another backend version
    assert get_or_build(entry, {**key, "backend_version": "2.0"}, build).rebuilt_because == "stale"
    # an unreadable meta is corrupt too
    (entry / "meta.json").write_text("{not json")
    assert get_or_build(entry, key, build).rebuilt_because == "corrupt"
    assert len(builds) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary build folders are removed"


def test_two_exporters_sharing_a_cache_keep_their_own_onnx_graphs(tmp_path, monkeypatch):
    """A torch upgrade (or two installs on one cache) exports into its own folder, and the backend's graph made
    from each export sits beside the others: going back and forth rebuilds nothing, as shared folders would."""
    from runtime_helpers import tiny_semantic
    from ros_amf.runtime import backends

    if not installed("onnxruntime"):
        pytest.fail("onnxruntime is pinned in requirements.txt but not installed; run make setup.")
    module = tiny_semantic(seed=3).module
    today = backends.torch_export_version()
    events = []
    for exporter in (today, "torch-9.9-opset99-graph9", today, "torch-9.9-opset99-graph9"):
        monkeypatch.setattr(backends, "torch_export_version", lambda: exporter)
        forward = BackendForward("onnxruntime", module, "semantic model", cache=tmp_path)
        forward.prepare((64, 96))
        events.append((forward.cache_events[0]["onnx"], forward.cache_events[0]["onnxruntime"]))
    assert events == [("missing", "missing")] * 2 + [("cached", "cached")] * 2
    folder = next(tmp_path.glob("graphs/*/semantic-64x96"))
    assert {p.name for p in folder.glob("onnx-*")} == {f"onnx-{today.replace('+', '_')}", "onnx-torch-9.9-opset99-graph9"}


def test_missing_backend_falls_back_to_torch_with_one_sentence(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)   # as if it were not installed: import fails
    engine = Engine(EngineConfig(backend="openvino", inference_workers=1), models["instance"])
    assert engine.stages.backend == "torch"
    (warning,) = engine.warnings
    assert "not installed" in warning and "torch forward instead" in warning and "pip install openvino" in warning
    # auto quietly keeps torch when the default backend is missing
    auto = Engine(EngineConfig(backend="auto", inference_workers=1), models["instance"])
    assert auto.warnings == []


def test_backend_on_cuda_or_fp16_says_it_runs_torch():
    model = load_model("instance", None, INSTANCE_PT)   # its own copy: the engine casts it to fp16
    engine = Engine(EngineConfig(backend="onnxruntime", precision="fp16", inference_workers=1), model)
    assert engine.stages.backend == "torch"
    assert any("fp32 only" in w for w in engine.warnings)


def test_unknown_backend_is_one_sentence():
    with pytest.raises(ValueError, match="backend 'tensorrt' is not known; use one of auto, torch"):
        EngineConfig(backend="tensorrt")


def test_failing_backend_falls_back_to_torch_and_says_so(models, tmp_path):
    if not installed("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    module = models["instance"].module
    forward = BackendForward("onnxruntime", module, "instance model", cache=blocked)
    images = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 128, 160), dtype=np.float32))
    with torch.inference_mode():
        out, expected = forward(images), module(images)
    assert forward.fallback_reason is not None
    (warning,) = forward.warnings
    assert warning.startswith("backend 'onnxruntime' failed for the instance model at input 128x160")
    assert warning.endswith("running the torch forward instead.")
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        assert torch.equal(out[key], expected[key])


@pytest.mark.slow
def test_backend_threads_follow_the_torch_setting(models, cache):
    if not installed("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    forward = BackendForward("onnxruntime", models["instance"].module, "instance model")
    images = torch.zeros(1, 3, 128, 160)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            forward(images)
    finally:
        torch.set_num_threads(before)
    assert forward.fallback_reason is None
    assert sorted(threads for (_, threads) in forward._pools) == [1, 2]
    assert len(forward.cache_events) == 1, "one export for the shape, whatever the threads"


@pytest.mark.slow
def test_export_command_writes_a_graph_that_reproduces_torch(tmp_path, capsys):
    out = tmp_path / "instance.onnx"
    assert export_app.main(["--checkpoint", str(INSTANCE_PT), "--size", "240x320", "--out", str(out)]) == 0
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["kind"] == "instance" and meta["input"]["images"] == [1, 3, 384, 512]
    assert meta["outputs"] == ["pred_logits", "pred_masks_stride8", "pred_scores"]
    for backend in COMPILED:
        if installed(backend):
            assert meta["checks"][backend]["passed"], meta["checks"]
    import onnx
    onnx.checker.check_model(str(out))
    assert "reproduces torch" in capsys.readouterr().out


def test_export_command_rejects_bad_arguments(tmp_path, capsys):
    assert export_app.main(["--checkpoint", str(INSTANCE_PT), "--size", "big", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--size 'big' is not HxW" in capsys.readouterr().err
    assert export_app.main(["--checkpoint", str(INSTANCE_PT), "--checkpoint", str(INSTANCE_PT),
                            "--out", str(tmp_path / "x.onnx")]) == 2
    assert "two instance models given" in capsys.readouterr().err


def test_auto_picks_the_measured_fastest_backend_per_model_and_torch_off_the_cpu_fp32_path():
    from ros_amf.runtime.backends import resolve_backend
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    picks = {tasks: resolve_backend("auto", cpu, "fp32", False, tasks)[0]
             for tasks in (("instance",), ("semantic",), ("instance", "semantic"))}
    expected = {("instance",): "onnxruntime", ("semantic",): "openvino", ("instance", "semantic"): "openvino"}
    assert picks == {tasks: name if installed(name) else "torch" for tasks, name in expected.items()}
    assert resolve_backend("auto", cpu, "fp32", True, ("semantic",))[0] == "torch"     # random weights: plumbing
    assert resolve_backend("auto", cuda, "fp16", False, ("semantic",)) == ("torch", [])


def test_an_engine_on_auto_names_each_models_backend_when_they_differ(models):
    from ros_amf.runtime.backends import backend_runs
    if not (installed("onnxruntime") and installed("openvino")):
        pytest.skip("needs both onnxruntime and openvino")
    runs = [(("instance",), models["instance"].module), (("semantic",), models["semantic"].module)]
    summary, forwards = backend_runs("auto", runs, torch.device("cpu"), "fp32", False, [])
    assert summary == "onnxruntime (instance) + openvino (semantic)"
    assert [forward.backend for _, forward in forwards] == ["onnxruntime", "openvino"]
