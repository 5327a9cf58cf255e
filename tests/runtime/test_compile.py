"""Compiled forwards (runtime.compile, issue 18): inductor equals eager on a slim model on the CPU, CUDA-graph
capture falls back on a CPU with one sentence, bad settings are refused, and the backend wiring."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ros_amf.runtime.backends import backend_runs
from ros_amf.runtime.compile import CudaGraphForward, InductorForward, compile_forward, mode_for
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.stages import FrameSettings, FrameStages

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_YAML = ROOT / "models" / "amf_sparseinst_r18slim.yaml"
CPU = torch.device("cpu")


def _slim_instance():
    torch.manual_seed(0)
    return load_model("instance", INSTANCE_YAML, None)


@pytest.mark.slow      # the inductor compile of the slim model takes ~50 s on 2 loaded cores
def test_inductor_forward_of_a_slim_model_equals_eager_on_cpu():
    loaded = _slim_instance()
    stages = FrameStages(FrameSettings(compile={"instance": "inductor"}), instance=loaded)
    (tasks, module), = stages.runs
    assert isinstance(module, InductorForward) and stages.warnings == []
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        eager = loaded.module(images)
        compiled = module(images)
    assert module.fallback_reason is None, module.fallback_reason     # it really ran compiled
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-4)


def test_cudagraphs_on_cpu_runs_eager_and_says_so_in_one_sentence():
    loaded = _slim_instance()
    stages = FrameStages(FrameSettings(compile={"instance": "cudagraphs"}), instance=loaded)
    (tasks, module), = stages.runs
    assert module is loaded.module                      # eager: nothing wraps it
    said = [w for w in stages.warnings if "cudagraphs" in w]
    assert len(said) == 1 and said[0].count(". ") == 0 and said[0].endswith("instead.")
    assert "needs a CUDA device" in said[0] and "compile none" in said[0]


@pytest.mark.parametrize("modes, words", [({"instance": "tensorrt"}, "compile mode 'tensorrt'"),
                                          ({"depth": "inductor"}, "'depth', which is not a model")])
def test_unknown_compile_settings_are_refused_in_one_sentence(modes, words):
    with pytest.raises(ValueError, match=words):
        FrameSettings(compile=modes)


class _Tiny(nn.Module):
    def forward(self, images):
        return {"logits": images * 2}


def test_auto_backend_with_compile_runs_torch_and_another_backend_says_compile_is_unused():
    runs = [(("semantic",), _Tiny())]
    warnings: list[str] = []
    backend, wrapped = backend_runs("auto", runs, CPU, "fp32", False, warnings, {"semantic": "inductor"})
    assert backend == "torch" and isinstance(wrapped[0][1], InductorForward) and warnings == []
    backend, wrapped = backend_runs("onnxruntime", runs, CPU, "fp32", False, warnings, {"semantic": "inductor"})
    assert backend == "onnxruntime" and not isinstance(wrapped[0][1], InductorForward)
    assert len(warnings) == 1 and "applies to the torch forward only" in warnings[0]


def test_joint_forward_takes_the_mode_asked_for_and_says_when_the_two_differ():
    warnings: list[str] = []
    assert mode_for(("instance", "semantic"), {"semantic": "inductor"}, warnings) == "inductor" and not warnings
    assert mode_for(("instance", "semantic"), {"instance": "cudagraphs", "semantic": "inductor"},
                    warnings) == "cudagraphs"
    assert len(warnings) == 1 and "joint mode" in warnings[0]


class _FailsWhenCompiled(nn.Module):
    def forward(self, images):
        if torch.compiler.is_compiling():
            raise RuntimeError("this layer has no compiled form")
        return images + 1


def test_a_forward_that_fails_to_compile_runs_eager_and_says_so_once():
    warnings: list[str] = []
    module = compile_forward(_FailsWhenCompiled(), "inductor", CPU, "semantic model", warnings)
    images = torch.zeros(1, 3, 8, 8)
    for _ in range(2):
        torch.testing.assert_close(module(images), images + 1)
    assert len(warnings) == 1 and "compile 'inductor' failed for the semantic model at input 8x8" in warnings[0]
    assert warnings[0].endswith("running the eager torch forward instead.")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (runs in gpu_check)")
def test_cuda_graph_replays_equal_eager_and_each_frame_gets_its_own_outputs():
    loaded = _slim_instance()
    module = loaded.module.to("cuda").eval()
    warnings: list[str] = []
    graphed = compile_forward(module, "cudagraphs", torch.device("cuda"), "instance model", warnings)
    assert isinstance(graphed, CudaGraphForward)
    generator = torch.Generator(device="cuda").manual_seed(2)
    first, second = (torch.randn(1, 3, 64, 96, device="cuda", generator=generator) for _ in range(2))
    with torch.inference_mode():
        out_first, out_second = graphed(first), graphed(second)   # the second replay must not overwrite the first
        for images, out in ((first, out_first), (second, out_second)):
            eager = module(images)
            for key in ("pred_logits", "pred_masks", "pred_scores"):
                torch.testing.assert_close(out[key], eager[key], rtol=1e-3, atol=1e-3)
    assert graphed.fallback_reason is None and warnings == []


def test_bench_measures_compile_modes_in_one_run_and_reports_the_fallback(tmp_path, capsys):
    import json
    from dataclasses import asdict, is_dataclass

    import yaml

    from ros_amf.apps import bench
    from runtime_helpers import TINY_INSTANCE
    (tmp_path / "inst.yaml").write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v
                                                        for k, v in TINY_INSTANCE.items()}))
    out = tmp_path / "bench.json"
    assert bench.main(["--tasks", "instance", "--instance-config", str(tmp_path / "inst.yaml"), "--image", "48x64",
                       "--short-side", "64", "--max-long-side", "96", "--frames", "2", "--rounds", "1",
                       "--equality-frames", "1", "--device", "cpu", "--compile", "none,cudagraphs",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["variants"]) == ["compile none", "compile cudagraphs"]
    none, graphs = report["variants"]["compile none"], report["variants"]["compile cudagraphs"]
    assert none["fell_back_to_torch"] == [] and none["bare_fps"] > 0
    assert any("needs a CUDA device" in w for w in graphs["fell_back_to_torch"])   # said, not silent
    assert graphs["equality_vs_first"]["equal"] and graphs["pipelined_fps"] > 0
    assert "compile cudagraphs (fell back" in capsys.readouterr().out


def test_bench_refuses_an_unknown_compile_mode_in_one_sentence(capsys):
    from ros_amf.apps import bench
    with pytest.raises(SystemExit):
        bench.main(["--compile", "none,tensorrt"])
    assert "--compile takes one or more of none, inductor, cudagraphs" in capsys.readouterr().err


def test_gpu_check_bare_step_measures_eager_and_says_why_there_is_no_cuda_graph_on_cpu():
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    table = gpu_check.step_bare_fps(gpu_check.Plan(dry=True), argparse.Namespace(compile="none,cudagraphs"))
    assert table
    for row in table.values():
        assert row["eager_fps"] > 0 and row["cuda_graph_fps"] is None
        assert "needs a CUDA device" in row["cudagraphs_note"]
