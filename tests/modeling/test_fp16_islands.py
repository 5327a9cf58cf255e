"""fp16 islands: the steps whose fp16 result is wrong, not just rounded, run in fp32 when the model
runs in fp16, and then match the fp32 computation on the same (fp16) inputs. fp16 runs on the CPU
for all three (grid_sample, matmul, reductions), so no bfloat16 stand-in is needed."""
import torch

from ros_amf.modeling.backbones.deform_conv import modulated_deform_conv2d
from ros_amf.modeling.semantic.afma import AfmaFactors
from ros_amf.modeling.sparseinst.simam import SimAM


def _randn(*shape, scale=1.0, seed=0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).half()


def test_dcn_samples_at_fp32_positions_on_a_wide_map():
    # 256 px wide: an fp16 grid would put taps up to 1/8 px off (errors ~0.25 here, 200x the tolerance)
    x, offset = _randn(1, 8, 32, 256, seed=1), _randn(1, 18, 32, 256, scale=3.0, seed=2)
    mask = torch.rand(1, 9, 32, 256, generator=torch.Generator().manual_seed(3)).half()
    weight = _randn(4, 8, 3, 3, scale=0.2, seed=4)
    half = modulated_deform_conv2d(x, offset, mask, weight, None, padding=1)
    full = modulated_deform_conv2d(x.float(), offset.float(), mask.float(), weight.float(), None, padding=1)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, atol=5e-3, rtol=2e-3)


def test_afma_counts_nonzeros_of_the_fp32_product():
    # small factors (the feature branch is divided by 4^d): some fp16 products would round to zero
    image, feature = _randn(1, 3, 120, 64, scale=1e-3, seed=5), _randn(1, 3, 30, 64, scale=1e-3, seed=6)
    half = AfmaFactors(image, feature, 8, 2, (80, 96)).row_nonzero_counts()
    full = AfmaFactors(image.float(), feature.float(), 8, 2, (80, 96)).row_nonzero_counts()
    assert torch.equal(half, full)


def test_simam_variance_does_not_overflow_in_fp16():
    # 64x64 activations of magnitude ~30: the fp16 sum of squares (~4e6) would overflow to inf
    x = _randn(1, 4, 64, 64, scale=30.0, seed=7)
    half = SimAM()(x)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), SimAM()(x.float()), atol=0.1, rtol=2e-3)
