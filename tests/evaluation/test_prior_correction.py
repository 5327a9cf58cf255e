"""Class-prior correction (``ros-amf calibrate semantic``): the offsets, where the model adds them, that old
checkpoints still load, that the exported graphs carry them, and the command end to end."""
import json

import numpy as np
import pytest
import torch

from ros_amf.apps.cli import main as cli_main
from ros_amf.contract.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from ros_amf.data.synthetic.dataset import make_dataset
from ros_amf.evaluation.prior import best_alpha, prior_bias, score_alphas
from ros_amf.evaluation.semantic import evaluate, load_semantic_model, open_semantic_dataset, small_ids_of
from ros_amf.modeling.joint import JointModelConfig, build_joint_model
from ros_amf.modeling.semantic.model import build_semantic_model
from ros_amf.runtime.backends import BackendForward, backend_installed
from ros_amf.runtime.preprocess import InputSize
from runtime_helpers import tiny_config


def test_offsets_are_minus_alpha_log_weight_and_an_absent_class_takes_the_rarest_offset():
    weights = [0.5, 2.0, 0.0, 4.0]
    assert prior_bias(weights, 1.0) == pytest.approx([np.log(2), -np.log(2), -np.log(4), -np.log(4)])
    assert prior_bias(weights, 0.5) == pytest.approx([np.log(2) / 2, -np.log(2) / 2, -np.log(4) / 2, -np.log(4) / 2])
    assert not prior_bias(weights, 0.0).any()
    with pytest.raises(ValueError, match="non-negative"):
        prior_bias([0.0, 0.0], 1.0)


AFMA = {"afma": True, "afma_depth": 2, "afma_patch_size": 4}


@pytest.mark.parametrize("host", [{}, AFMA], ids=["host", "host+afma"])
def test_the_model_adds_the_offsets_at_inference_only_and_skips_the_add_when_they_are_zero(host):
    torch.manual_seed(0)
    model = build_semantic_model(tiny_config("semantic", **host)).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        raw = model(images)["logits"]
        assert not model.uses_logit_bias
        bias = torch.tensor([1.0, -2.0, 0.5, 0.0])
        model.set_logit_bias(bias)
        assert model.uses_logit_bias
        corrected = model(images)
        assert torch.allclose(corrected["logits"], raw + bias.view(1, -1, 1, 1))
        model.set_logit_bias(torch.zeros(4))
        assert not model.uses_logit_bias and torch.equal(model(images)["logits"], raw)
        model.set_logit_bias(bias)
        model.train()                                  # (batch statistics and dropout: other numbers)
        torch.manual_seed(5)
        trained = model(images)
        model.set_logit_bias(torch.zeros(4))
        torch.manual_seed(5)
        assert torch.equal(model(images)["logits"], trained["logits"])   # training sees the raw logits


def test_a_checkpoint_without_offsets_loads_as_zero_and_one_with_them_switches_them_on(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("semantic")
    source = build_semantic_model(cfg)
    old_state = {k: v for k, v in source.state_dict().items() if k != "logit_bias"}   # saved before the buffer
    fresh = build_semantic_model(cfg)
    load_state_into(fresh, {"state_dict": old_state})
    assert not fresh.uses_logit_bias and not fresh.logit_bias.any()
    calibrated = {**old_state, "logit_bias": torch.tensor([0.0, 1.0, 0.0, 0.0])}
    load_state_into(fresh, {"state_dict": calibrated})
    assert fresh.uses_logit_bias and fresh.logit_bias[1] == 1.0
    # inside a shared-backbone model the semantic half notices its offsets too
    import yaml
    from ros_amf.contract.config import from_dict
    joint = build_joint_model(from_dict(JointModelConfig, yaml.safe_load(
        "backbone: resnet\nbackbone_depth: 18\nbackbone_width: 8\ninput_size: {short_side: 64, max_long_side: 96}\n"
        "instance: {num_classes: 3, encoder_channels: 16, decoder_channels: 16, decoder_convs: 1, num_masks: 8,\n"
        "           groups: 2, expand_dim: 16, kernel_dim: 8, head_norm: gn}\n"
        "semantic: {architecture: fpn, num_classes: 4, decoder_channels: 16, afma: false}\n")))
    state = joint.state_dict()
    state["semantic.logit_bias"] = torch.tensor([0.0, 0.0, -3.0, 0.0])
    load_state_into(joint, {"state_dict": state})
    assert joint.semantic.uses_logit_bias


@pytest.mark.skipif(not backend_installed("onnxruntime"), reason="onnxruntime is not installed")
@pytest.mark.parametrize("host", [{}, AFMA], ids=["host", "host+afma"])
def test_the_exported_graph_carries_the_offsets(tmp_path, host):
    torch.manual_seed(0)
    model = build_semantic_model(tiny_config("semantic", **host)).eval()
    model.set_logit_bias(torch.tensor([2.0, -1.0, 0.0, 0.5]))
    images = torch.randn(1, 3, 64, 96)
    compiled = BackendForward("onnxruntime", model, "tiny semantic", cache=tmp_path)
    with torch.no_grad():
        expected, got = model(images)["logits"], compiled(images)["logits"]
    assert compiled.fallback_reason is None
    assert torch.allclose(got, expected, atol=1e-4)
    assert (expected.argmax(1) == 0).float().mean() > 0.9     # the +2 on class 0 decides most pixels


@pytest.fixture(scope="module")
def calibration_case(tmp_path_factory):
    """Synthetic frames and a tiny 19-class FPN checkpoint whose meta records training class weights."""
    root = tmp_path_factory.mktemp("prior")
    make_dataset(root / "synth", frames=3, seed=4, val_fraction=0.67, size=(128, 96), progress=False)
    torch.manual_seed(1)
    cfg = tiny_config("semantic", num_classes=19)
    model = build_semantic_model(cfg)
    weights = np.linspace(0.05, 5.0, 19)
    weights[3] = 0.0
    checkpoint = root / "tiny.pt"
    import dataclasses
    save_checkpoint(checkpoint, task="semantic", model_config=json.loads(json.dumps(dataclasses.asdict(cfg))),
                    class_names=[f"c{k}" for k in range(19)], state_dict=model.state_dict(),
                    meta={"class_weights": weights.tolist()}, half=True)
    return root, checkpoint, weights


def test_alpha_zero_scores_like_the_plain_evaluation(calibration_case):
    root, checkpoint, weights = calibration_case
    model, _ = load_semantic_model(checkpoint)
    dataset = open_semantic_dataset("cityscapes", root / "synth", "val")
    size = InputSize(64, 96)
    rows = score_alphas(model, dataset, size, weights, [0.0, 1.0], small_ids_of(dataset, "cityscapes"))
    plain = evaluate(model, dataset, size, small_ids_of(dataset, "cityscapes"))
    assert rows[0]["alpha"] == 0.0 and rows[0]["miou"] == pytest.approx(plain["miou"], nan_ok=True)
    assert rows[0]["pixels"] == plain["pixels"] and rows[0]["images"] == 2
    assert best_alpha([{"alpha": 0.5, "miou": 0.8}, {"alpha": 1.0, "miou": 0.8}, {"alpha": 0.0, "miou": 0.7}]) == 0.5


def test_calibrate_writes_a_checkpoint_that_eval_scores_as_the_table_says(calibration_case, tmp_path, capsys):
    root, checkpoint, weights = calibration_case
    out = tmp_path / "calibrated.pt"
    argv = ["calibrate", "semantic", "--checkpoint", str(checkpoint), "--data", str(root / "synth"),
            "--input-short-side", "64", "--input-max-long-side", "96", "--alphas", "0", "1", "--alpha", "1",
            "--out", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 1 (stored) |" in printed
    payload = load_checkpoint(out, task="semantic")
    assert payload["meta"]["prior_correction"]["alpha"] == 1.0
    assert {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    stored = payload["state_dict"]["logit_bias"].float().numpy()               # fp16 like the weights
    assert stored == pytest.approx(prior_bias(weights, 1.0), abs=1e-2)
    assert out.with_suffix(".sha256").read_text().split()[1] == "calibrated.pt"
    table = {r["alpha"]: r for r in payload["meta"]["prior_correction"]["table"]}
    assert abs(table[1.0]["miou"] - table[0.0]["miou"]) > 0.01     # the offsets change the answer here
    scored = tmp_path / "eval.json"
    assert cli_main(["eval", "semantic", "--checkpoint", str(out), "--data", str(root / "synth"),
                     "--input-short-side", "64", "--input-max-long-side", "96", "--out", str(scored)]) == 0
    assert json.loads(scored.read_text())["miou"] == pytest.approx(table[1.0]["miou"], abs=2e-3)

    # calibrating the calibrated checkpoint again starts from its raw logits: the same table
    again = tmp_path / "again.pt"
    assert cli_main([*argv[:-1], str(again)]) == 0
    capsys.readouterr()
    table_again = {r["alpha"]: r for r in load_checkpoint(again)["meta"]["prior_correction"]["table"]}
    assert table_again[0.0]["miou"] == pytest.approx(table[0.0]["miou"], abs=1e-3)
    assert table_again[1.0]["miou"] == pytest.approx(table[1.0]["miou"], abs=2e-3)


def test_calibrate_refuses_a_checkpoint_without_class_weights_and_its_own_path(calibration_case, tmp_path, capsys):
    root, checkpoint, _ = calibration_case
    bare = tmp_path / "bare.pt"
    payload = load_checkpoint(checkpoint, task="semantic")
    save_checkpoint(bare, task="semantic", model_config=payload["model_config"], class_names=payload["class_names"],
                    state_dict=payload["state_dict"], meta={})
    assert cli_main(["calibrate", "semantic", "--checkpoint", str(bare), "--data", str(root / "synth"),
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert "records no training class weights" in capsys.readouterr().err
    assert cli_main(["calibrate", "semantic", "--checkpoint", str(bare), "--data", str(root / "synth"),
                     "--out", str(bare)]) == 2
    assert "--out is the --checkpoint itself" in capsys.readouterr().err


def test_claims_study_scores_each_model_as_calibrate_then_eval_would(calibration_case, tmp_path, capsys):
    """The study's prior-corrected score equals ``ros-amf calibrate semantic`` (default alphas, same split)
    followed by ``ros-amf eval semantic``: the same alpha, the same mIoU."""
    from ros_amf.training.study import Arm, Budget, StudyError, StudySpec, score_prior_corrected

    root, checkpoint, _ = calibration_case
    spec = StudySpec(task="semantic", arms=(Arm("a", "unused.yaml"),), seeds=(1,), budget=Budget(1, 1),
                     train_data=str(root / "synth"), test_data=str(root / "synth"), eval_every=1,
                     test_split="train", eval_input=InputSize(64, 96))
    scored = score_prior_corrected(spec, checkpoint, "val", limit=0)     # alpha from val, scored on train

    out = tmp_path / "calibrated.pt"
    assert cli_main(["calibrate", "semantic", "--checkpoint", str(checkpoint), "--data", str(root / "synth"),
                     "--split", "val", "--input-short-side", "64", "--input-max-long-side", "96",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    assert scored["alpha"] == load_checkpoint(out)["meta"]["prior_correction"]["alpha"]
    assert scored["alpha"] != 0.0          # the tiny model's offsets matter, so the check below can fail
    evaluated = tmp_path / "eval.json"
    assert cli_main(["eval", "semantic", "--checkpoint", str(out), "--data", str(root / "synth"), "--split", "train",
                     "--input-short-side", "64", "--input-max-long-side", "96", "--out", str(evaluated)]) == 0
    assert scored["metrics"]["mIoU"] == pytest.approx(json.loads(evaluated.read_text())["miou"], abs=2e-3)
    assert len(scored["calibration"]) == 6 and scored["calibration_split"] == "val"

    with pytest.raises(StudyError, match="is the study's test split; choose alpha on a validation split"):
        score_prior_corrected(spec, checkpoint, "train", limit=0)
    with pytest.raises(StudyError, match="semantic studies only"):
        score_prior_corrected(StudySpec(**{**vars(spec), "task": "instance"}), checkpoint, "val", limit=0)
