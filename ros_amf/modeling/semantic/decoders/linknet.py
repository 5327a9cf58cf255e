"""LinkNet decoder (Chaurasia & Culurciello 2017), SMP layout: five x2 blocks from stride 32 to 1.

Each block mirrors an encoder stage: 1x1 conv-BN-ReLU to a quarter of its input width, a 4x4
transposed conv (stride 2)-BN-ReLU, 1x1 conv-BN-ReLU to the width of the next shallower encoder
stage; the encoder skip of that stride is *added* (not concatenated), which keeps the
decoder light. The last block (stride 1, no skip) outputs ``final_channels``.
Output: [B, final_channels, H, W].
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ros_amf.modeling.layers import conv_norm_relu


def _decoder_block(cin: int, cout: int) -> nn.Sequential:
    mid = max(1, cin // 4)
    return nn.Sequential(conv_norm_relu(cin, mid, 1, "bn"),
                         nn.ConvTranspose2d(mid, mid, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(mid),
                         nn.ReLU(inplace=True),
                         conv_norm_relu(mid, cout, 1, "bn"))


class LinknetDecoder(nn.Module):
    output_stride = 1

    def __init__(self, encoder_channels: tuple[int, ...], final_channels: int = 32):
        super().__init__()
        widths = list(encoder_channels[1:6])[::-1] + [final_channels]  # strides 32, 16, 8, 4, 2, then 1
        self.blocks = nn.ModuleList(_decoder_block(cin, cout) for cin, cout in zip(widths[:-1], widths[1:]))
        self.out_channels = final_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[5]
        skips = features[1:5][::-1] + [None]
        for block, skip in zip(self.blocks, skips):
            x = block(x)
            if skip is not None:
                x = x + skip
        return x
