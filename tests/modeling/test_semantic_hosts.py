"""The AFMA paper's eight host networks: each builds, keeps its decoder's stride, carries AFMA exactly as the
paper-literal reference computes it, and d = 4 works on the dilated hosts as in the authors' code."""
from pathlib import Path

import pytest
import torch

from ros_amf.apps.model_info import main as model_info
from ros_amf.modeling.semantic.loss import SemanticLoss, afma_mse
from ros_amf.modeling.semantic.model import ARCHITECTURES, SemanticModelConfig, build_semantic_model
from tests.afma_reference import naive_afma_mse, naive_forward

MODELS = Path(__file__).resolve().parents[2] / "models"
NEW_HOSTS = ("unetplusplus", "manet", "pan", "linknet")


def _tiny(architecture, afma=True, depth=2):
    return SemanticModelConfig(architecture=architecture, num_classes=4, encoder_width=8, decoder_channels=16,
                               afma=afma, afma_depth=depth, afma_patch_size=4)


def test_the_papers_eight_hosts_are_available():
    assert set(ARCHITECTURES) == {"deeplabv3", "unet", "unetplusplus", "manet", "fpn", "pan", "linknet", "pspnet"}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("afma", [False, True])
def test_host_gives_logits_at_the_input_size_and_its_decoder_keeps_its_stride(architecture, afma):
    torch.manual_seed(0)
    model = build_semantic_model(_tiny(architecture, afma)).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        decoded = model.decoder(model.encoder(images))
        outputs = model(images)
    stride = model.decoder.output_stride
    assert decoded.shape == (1, model.decoder.out_channels, 64 // stride, 96 // stride)
    assert outputs["logits"].shape == (1, 4, 64, 96)
    assert (outputs["afma"] is None) != afma


@pytest.mark.parametrize("architecture,depth", [(a, 2) for a in ARCHITECTURES]
                         + [("deeplabv3", 4), ("pspnet", 4), ("deeplabv3", 5), ("pan", 5), ("unet", 4)])
def test_afma_on_the_host_equals_the_naive_reference(architecture, depth):
    torch.manual_seed(1)
    model = build_semantic_model(_tiny(architecture, depth=depth)).double().eval()
    # a negative bias on the last MLP layer zeroes many patch entries, so A has rows with different counts
    torch.nn.init.normal_(model.afma.patch_mlp.layers[1].weight, mean=-0.15, std=0.3)
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 64, 96))
    with torch.no_grad():
        features = model.encoder(images)
        outputs = model(images)
        reference, attention = naive_forward(model.afma, images, features, outputs["host_logits"])
        ours_mse = afma_mse(outputs["afma"], labels)
        reference_mse = naive_afma_mse(attention, labels, model.afma.patch_size, model.afma.stride_depth)
    assert not torch.equal(outputs["logits"], outputs["host_logits"])
    assert ((outputs["logits"] - reference).norm() / reference.norm()).item() <= 1e-5
    assert ((outputs["afma"].attention() - attention).norm() / attention.norm()).item() <= 1e-5
    assert abs(ours_mse.item() - reference_mse.item()) <= 1e-5 * reference_mse.item()


@pytest.mark.parametrize("architecture", ["deeplabv3", "pspnet"])
def test_depth_4_on_a_dilated_host_reads_the_stride_8_res4_and_trains(architecture):
    torch.manual_seed(0)
    model = build_semantic_model(_tiny(architecture, depth=4))
    images = torch.randn(2, 3, 64, 96)
    features = model.encoder(images)
    # the dilated res4 keeps stride 8; AFMA pools by 8 (authors' code clamps att_depth 4 to 3) but reads res4
    assert features[4].shape[-2:] == (8, 12)
    assert (model.afma.depth, model.afma.stride_depth) == (4, 3)
    assert model.afma.feature_conv.in_channels == model.encoder.out_channels[4]
    labels = torch.randint(0, 4, (2, 64, 96))
    losses = SemanticLoss(None, 4)(model(images), labels)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["loss_afma"] > 0
    assert model.afma.feature_conv.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.res4.parameters())


def test_pspnet_keeps_res4_only_when_afma_reads_it():
    shallow = build_semantic_model(_tiny("pspnet", depth=3))
    deep = build_semantic_model(_tiny("pspnet", depth=4))
    assert isinstance(shallow.encoder.res4, torch.nn.Identity) and isinstance(shallow.encoder.res5, torch.nn.Identity)
    assert not isinstance(deep.encoder.res4, torch.nn.Identity) and isinstance(deep.encoder.res5, torch.nn.Identity)


@pytest.mark.parametrize("name", NEW_HOSTS)
def test_model_info_runs_on_the_new_host_configs(name, capsys):
    assert model_info([str(MODELS / f"{name}_afma_r18.yaml"), "--size", "128", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "(semantic)" in out and "afma" in out and "GFLOPs" in out
