"""`ros-amf train semantic` resumes onto the same curve; `ros-amf eval semantic` scores the result."""
import json

import numpy as np
import pytest
import torch

from ros_amf.contract.checkpoint import load_checkpoint
from ros_amf.apps import eval_semantic
from ros_amf.apps.train import main_semantic
from ros_amf.data.transforms import TrainAugmentation
from ros_amf.training.config import load_run_config
from ros_amf.training.semantic import SemanticTrainConfig


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text("model:\n  architecture: fpn\n  num_classes: 19\n  encoder_width: 8\n  decoder_channels: 16\n"
                    "  afma: true\n  afma_depth: 2\n  afma_patch_size: 4\n"
                    "  input_size: {short_side: 64, max_long_side: 128}\n")
    return path


def augment(image, label, rng, short_side, scale_range, crop):
    """The semantic settings of the one training augmentation, on an image and its label map."""
    augmentation = TrainAugmentation(short_sides=(short_side,), max_long_side=None, scale_range=scale_range,
                                     crop_hw=crop)
    sample = augmentation({"image": image, "label": label}, rng)
    return sample["image"], sample["label"]


def _train(config, data, out, iterations, *extra):
    argv = ["--config", str(config), "--data", str(data), "--out", str(out), "--iterations", str(iterations),
            "--batch-size", "2", "--short-side", "64", "--crop", "64x64", "--checkpoint-every", "1",
            "--log-every", "1", "--threads", "1", *extra]
    assert main_semantic(argv) == 0


def test_resumed_run_continues_the_same_curve_and_evaluates(tiny_data, tiny_config, tmp_path):
    _train(tiny_config, tiny_data, tmp_path / "straight", 3)
    _train(tiny_config, tiny_data, tmp_path / "resumed", 2)
    _train(tiny_config, tiny_data, tmp_path / "resumed", 3, "--resume")
    straight = load_checkpoint(tmp_path / "straight" / "final.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "final.pt")
    assert resumed["train_state"]["iteration"] == 3
    for name, value in straight["state_dict"].items():
        assert torch.allclose(value.float(), resumed["state_dict"][name].float(), atol=1e-5), name
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows] == [1, 2, 3]
    assert {"loss", "loss_nll", "loss_afma"} <= set(rows[-1])
    shipped = load_checkpoint(tmp_path / "resumed" / "model.pt")
    assert shipped["train_state"] is None and shipped["state_dict"]["head.conv.weight"].dtype == torch.float16
    assert len(shipped["meta"]["class_weights"]) == 19

    out = tmp_path / "scores.json"
    assert eval_semantic.main(["--checkpoint", str(tmp_path / "resumed" / "model.pt"), "--data", str(tiny_data),
                               "--short-side", "64", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert 0.0 <= scores["miou"] <= 1.0 and scores["images"] == 1
    assert set(scores) >= {"miou", "miou_small", "miou_large", "per_class", "confusion_matrix"}
    assert scores["pixels"] == int(np.sum(scores["confusion_matrix"]))


def test_augmentation_scales_crops_and_flips_image_and_label_together():
    rng = np.random.default_rng(0)
    image = np.zeros((60, 80, 3), np.uint8)
    label = np.zeros((60, 80), np.uint8)
    image[:, :40], label[:, :40] = 200, 7  # left half: bright, class 7
    sides = set()
    for _ in range(20):
        out_image, out_label = augment(image, label, rng, 60, (0.5, 2.0), (64, 64))
        assert out_image.shape == (64, 64, 3) and out_label.shape == (64, 64)
        inside = out_label != 255  # crops larger than the scaled image are padded with ignore
        agree = (out_label[inside] == 7) == (out_image[inside][:, 0] > 100)
        assert agree.mean() > 0.95  # all but the interpolated boundary column
        columns = np.nonzero(out_label == 7)[1], np.nonzero(out_label == 0)[1]
        if columns[0].size and columns[1].size:
            sides.add("left" if columns[0].mean() < columns[1].mean() else "right")
    assert sides == {"left", "right"}  # some crops were flipped, some not


def test_init_fine_tunes_from_given_weights_and_refuses_a_mismatched_checkpoint(tiny_data, tiny_config, tmp_path,
                                                                                 capsys):
    _train(tiny_config, tiny_data, tmp_path / "first", 3, "--lr", "1e-2")
    _train(tiny_config, tiny_data, tmp_path / "fresh", 1, "--lr", "1e-7")
    _train(tiny_config, tiny_data, tmp_path / "tuned", 1, "--lr", "1e-7", "--init", str(tmp_path / "first" / "final.pt"))
    first = load_checkpoint(tmp_path / "first" / "final.pt")["state_dict"]
    fresh = load_checkpoint(tmp_path / "fresh" / "final.pt")["state_dict"]
    tuned = load_checkpoint(tmp_path / "tuned" / "final.pt")
    assert tuned["train_state"]["iteration"] == 1  # a fresh schedule, not the first run's
    weight = "head.conv.weight"
    assert torch.allclose(tuned["state_dict"][weight].float(), first[weight].float(), atol=1e-5)
    assert not torch.allclose(fresh[weight].float(), first[weight].float(), atol=1e-3)

    other = tmp_path / "other.yaml"
    other.write_text(tiny_config.read_text().replace("decoder_channels: 16", "decoder_channels: 24"))
    argv = ["--config", str(other), "--data", str(tiny_data), "--out", str(tmp_path / "bad"), "--iterations", "1",
            "--short-side", "64", "--crop", "64x64", "--threads", "1", "--init", str(tmp_path / "first" / "final.pt")]
    assert main_semantic(argv) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_fine_tuning_from_a_calibrated_checkpoint_starts_without_its_offsets(tiny_data, tiny_config, tmp_path):
    _train(tiny_config, tiny_data, tmp_path / "first", 1)
    payload = load_checkpoint(tmp_path / "first" / "final.pt")
    payload["state_dict"]["logit_bias"] = torch.linspace(-2.0, 2.0, 19)     # as calibrate semantic stores them
    torch.save(payload, tmp_path / "calibrated.pt")
    _train(tiny_config, tiny_data, tmp_path / "tuned", 1, "--init", str(tmp_path / "calibrated.pt"))
    tuned = load_checkpoint(tmp_path / "tuned" / "final.pt")["state_dict"]
    # offsets chosen for other weights would be stale: training (and its val scores) start from none
    assert not tuned["logit_bias"].any()


def test_an_old_flat_config_still_reads_as_the_model_section(tiny_config, tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("".join(line[2:] + "\n" for line in tiny_config.read_text().splitlines()[1:]))
    assert "model:" not in flat.read_text()
    assert load_run_config(flat, "semantic", SemanticTrainConfig) == \
        load_run_config(tiny_config, "semantic", SemanticTrainConfig)


def test_resumed_and_fine_tuned_runs_keep_the_pixel_normalisation_their_weights_were_trained_with(
        tiny_data, tiny_config, tmp_path):
    """A run started from pretrained weights trains with their normalisation (not the YAML's): resuming it and
    fine-tuning from it must keep that normalisation in the batches, the validation and every checkpoint."""
    _train(tiny_config, tiny_data, tmp_path / "run", 1)
    minus_one_to_one = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}   # EfficientNet-Lite's, not ImageNet's
    last = tmp_path / "run" / "last.pt"
    payload = torch.load(last, weights_only=False)
    payload["model_config"]["pixel_normalisation"] = minus_one_to_one   # as a pretrained start records it
    torch.save(payload, last)
    _train(tiny_config, tiny_data, tmp_path / "run", 2, "--resume")

    def stored(path):
        return {k: list(v) for k, v in load_checkpoint(path)["model_config"]["pixel_normalisation"].items()}
    assert stored(tmp_path / "run" / "last.pt") == stored(tmp_path / "run" / "model.pt") == minus_one_to_one
    _train(tiny_config, tiny_data, tmp_path / "tuned", 1, "--init", str(tmp_path / "run" / "model.pt"))
    assert stored(tmp_path / "tuned" / "model.pt") == minus_one_to_one


def test_a_run_folder_is_never_overwritten_and_resume_refuses_a_changed_optimiser(tiny_data, tiny_config, tmp_path,
                                                                                  capsys):
    _train(tiny_config, tiny_data, tmp_path / "run", 1)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    argv = ["--config", str(tiny_config), "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--iterations",
            "2", "--batch-size", "2", "--short-side", "64", "--crop", "64x64", "--threads", "1"]
    capsys.readouterr()
    assert main_semantic(argv) == 2                                  # forgot --resume
    assert "already holds a training run (last.pt); pass --resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert main_semantic([*argv, "--resume", "--lr", "0.5"]) == 2    # the optimiser state was made with another lr
    assert "with lr" in capsys.readouterr().err
    assert main_semantic([*argv, "--resume"]) == 0                   # the length may change
    # both refusals come before the data is opened (minutes on a large set): a missing data folder is not reached
    absent = [*argv[:2], "--data", str(tmp_path / "absent"), *argv[4:]]
    assert main_semantic(absent) == 2 and "already holds a training run" in capsys.readouterr().err
    assert main_semantic([*absent, "--resume", "--lr", "0.5"]) == 2 and "with lr" in capsys.readouterr().err
