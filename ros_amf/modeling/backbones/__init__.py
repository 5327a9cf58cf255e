"""Backbones with one encoder contract (features[i] at stride 2^i, out_channels): ResNet (detectron2 naming,
ResNet-vd, DCNv2), EfficientNet-Lite0, and the mapping of pretrained weight files onto them."""
