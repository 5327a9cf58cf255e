"""Median-frequency class weights and the 5 · weighted-NLL + AFMA-MSE loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ros_amf.modeling.semantic.loss import SemanticLoss, class_pixel_histogram, median_frequency_weights


def test_median_frequency_weights_on_known_histogram():
    labels = [np.array([[0, 0], [0, 1]], dtype=np.uint8), np.array([[0, 2], [2, 255]], dtype=np.uint8)]
    pixels, image_pixels = class_pixel_histogram(labels, num_classes=4)
    assert pixels.tolist() == [4, 1, 2, 0]
    assert image_pixels.tolist() == [7, 4, 3, 0]  # ignore pixels are not part of an image's pixel count
    # f = [4/7, 1/4, 2/3], median 4/7; class 3 never occurs -> weight 0
    weights = median_frequency_weights(pixels, image_pixels)
    assert weights == pytest.approx([1.0, 16 / 7, 6 / 7, 0.0])


def test_empty_training_labels_are_reported():
    with pytest.raises(ValueError, match="no pixel"):
        median_frequency_weights(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))


def test_segmentation_term_is_five_times_weighted_nll():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    weights = torch.tensor([0.5, 2.0, 1.0])
    losses = SemanticLoss(weights, 3)({"logits": logits, "afma": None}, labels)
    expected = 5 * F.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert "loss_afma" not in losses
