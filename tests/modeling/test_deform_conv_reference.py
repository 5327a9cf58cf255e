"""DCNv2 in five kernels equals a direct, loop-free bilinear reading of the definition (no grid_sample)."""
import pytest
import torch

from ros_amf.modeling.backbones.deform_conv import modulated_deform_conv2d
from ros_amf.modeling.dispatch_count import DispatchCounter


def _bilinear_zero_padded(x, pos_y, pos_x):
    """x [C, H, W] read at real positions [...]: weighted corners, corners outside the image read 0."""
    channels, height, width = x.shape
    y0, x0 = pos_y.floor(), pos_x.floor()
    out = 0
    for corner_y, weight_y in ((y0, 1 - (pos_y - y0)), (y0 + 1, pos_y - y0)):
        for corner_x, weight_x in ((x0, 1 - (pos_x - x0)), (x0 + 1, pos_x - x0)):
            inside = (corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width)
            flat = (corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)).long()
            values = x.reshape(channels, -1)[:, flat.reshape(-1)].reshape(channels, *flat.shape)
            out = out + values * (weight_y * weight_x * inside)
    return out


def reference_dcn(x, offset, mask, weight, bias, stride, padding, dilation):
    batch, channels, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    rows = torch.arange(out_h, dtype=x.dtype).view(-1, 1) * stride - padding
    cols = torch.arange(out_w, dtype=x.dtype).view(1, -1) * stride - padding
    out = torch.zeros(batch, out_ch, out_h, out_w, dtype=x.dtype)
    for b in range(batch):
        for ky in range(kh):
            for kx in range(kw):
                k = ky * kw + kx
                pos_y = rows + ky * dilation + offset[b, 2 * k]
                pos_x = cols + kx * dilation + offset[b, 2 * k + 1]
                sampled = _bilinear_zero_padded(x[b], pos_y, pos_x) * mask[b, k]
                out[b] += torch.einsum("chw,oc->ohw", sampled, weight[:, :, ky, kx])
    return out if bias is None else out + bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_matches_the_definition_with_fractional_offsets(stride, padding, dilation):
    g = torch.Generator().manual_seed(stride * 10 + dilation)
    x = torch.randn(2, 3, 9, 12, generator=g, dtype=torch.float64)
    out_h = (9 + 2 * padding - dilation * 2 - 1) // stride + 1
    out_w = (12 + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = torch.randn(2, 18, out_h, out_w, generator=g, dtype=torch.float64) * 2.5  # many reads off the image
    mask = torch.rand(2, 9, out_h, out_w, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    ours = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    reference = reference_dcn(x, offset, mask, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)


def test_a_second_call_at_the_same_shape_runs_five_kernels():
    x, offset, mask = torch.randn(1, 8, 16, 16), torch.randn(1, 18, 16, 16), torch.rand(1, 9, 16, 16)
    weight = torch.randn(4, 8, 3, 3)
    modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)   # builds the per-shape regular grid
    with DispatchCounter() as counter:
        modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)
    assert dict(counter.count.by_op) == {"flip": 1, "addcmul": 1, "grid_sampler_2d": 1, "mul": 1, "convolution": 1}


def test_gradients_flow_to_input_offsets_masks_and_weights():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    offset = (torch.randn(1, 18, 6, 6) * 0.7).requires_grad_()
    mask = torch.rand(1, 9, 6, 6).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    with torch.inference_mode():     # the cached grid made here must still serve autograd later
        modulated_deform_conv2d(x.detach(), offset.detach(), mask.detach(), weight.detach(), None, 1, 1, 1)
    modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1).square().sum().backward()
    for tensor in (x, offset, mask, weight):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("trace", ["export", "compile"])
def test_traced_graphs_build_the_grid_in_the_graph_and_leave_the_cache_alone(trace):
    """Issue 17: a grid cached while tracing is a fake tensor the exporter lifts per layer (and fails on),
    and it would stay in the cache; traced graphs build the grid themselves and equal eager."""
    from ros_amf.modeling.backbones.deform_conv import ModulatedDeformConv2d, _cached_regular_grid
    torch.manual_seed(0)
    layer = torch.nn.Sequential(ModulatedDeformConv2d(4, 4), ModulatedDeformConv2d(4, 4, stride=2)).eval()
    for dcn in layer:
        torch.nn.init.normal_(dcn.offset_mask.weight, std=0.2)
    x = torch.randn(1, 4, 11, 13)
    _cached_regular_grid.cache_clear()
    if trace == "export":
        traced = torch.export.export(layer, (x,)).module()
    else:
        traced = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out = traced(x)
    assert _cached_regular_grid.cache_info().currsize == 0
    with torch.no_grad():
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
