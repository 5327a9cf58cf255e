"""Every host network trains with and without AFMA at non-square sizes; AFMA adds only its own parameters."""
import pytest
import torch

from ros_amf.modeling.semantic.model import ARCHITECTURES, SemanticModelConfig, build_semantic_model
from ros_amf.modeling.semantic.loss import SemanticLoss


def _tiny(architecture, afma, depth=2):
    return SemanticModelConfig(architecture=architecture, num_classes=5, encoder_width=8, decoder_channels=16,
                               afma=afma, afma_depth=depth, afma_patch_size=4)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("afma", [False, True])
def test_host_runs_forward_backward_at_non_square_size(architecture, afma):
    torch.manual_seed(0)
    model = build_semantic_model(_tiny(architecture, afma))
    images = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 5, (2, 64, 96))
    labels[:, :3] = 255
    outputs = model(images)
    assert outputs["logits"].shape == (2, 5, 64, 96)
    assert (outputs["afma"] is not None) == afma
    losses = SemanticLoss(torch.rand(5) + 0.5, 5)(outputs, labels)
    assert set(losses) == ({"loss", "loss_nll", "loss_afma"} if afma else {"loss", "loss_nll"})
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    assert model.head.conv.weight.grad.abs().sum() > 0
    if afma:
        assert model.afma.image_conv1.weight.grad.abs().sum() > 0
        assert model.afma.patch_mlp.layers[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 64))["logits"].shape == (1, 5, 96, 64)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_afma_switch_adds_exactly_the_afma_parameters(architecture):
    without = build_semantic_model(_tiny(architecture, False))
    with_afma = build_semantic_model(_tiny(architecture, True))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    feature_channels = with_afma.encoder.out_channels[2]
    classes, area = 5, 16
    expected = (3 * 64 * 49 + 64) + (64 * classes * 9 + classes) + (feature_channels * classes + classes) \
        + 2 * area * 2 * area
    assert count(with_afma) - count(without) == expected


def test_afma_depth_beyond_the_encoder_is_refused():
    with pytest.raises(ValueError, match="afma_depth 6"):
        build_semantic_model(_tiny("deeplabv3", True, depth=6))
