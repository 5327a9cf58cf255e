"""Gold AFMA (Eq. 19-21) on a Fig. 4 style toy scene, checked against hand-computed values."""
import torch

from ros_amf.modeling.semantic.afma import AfmaFactors
from ros_amf.modeling.semantic.loss import afma_mse, gold_factors
from tests.afma_reference import naive_gold_attention

SQUARE, CROSS = 0, 1
P, D = 2, 1  # 2x2 patches, attention depth 1 (pooling by 2): an 8x8 image has 16 image and 4 feature patches


def _toy_labels() -> torch.Tensor:
    labels = torch.full((1, 8, 8), 255)
    labels[0, 0:4, 0:4] = SQUARE  # large square: fills compressed patch m = 0 completely
    labels[0, 5:7, 5:7] = SQUARE  # small 2x2 square straddling pooling cells: 0.25 in all of patch m = 3
    for r, c in [(1, 5), (2, 4), (2, 5), (2, 6), (3, 5)]:  # a plus-shaped cross
        labels[0, r, c] = CROSS
    return labels


def _gold_attention(labels):
    image_patches, feature_patches = gold_factors(labels, 2, P, D, (8, 8))
    return image_patches @ feature_patches.transpose(-1, -2) / P ** 2


def test_gold_afma_matches_hand_computed_fig4_values():
    gold = _gold_attention(_toy_labels())[0]
    assert gold.shape == (2, 16, 4)
    square, cross = gold[SQUARE], gold[CROSS]
    # image patch 0 lies inside the large square: 1 to the large square, 0.25 to the compressed small one
    assert square[0].tolist() == [1.0, 0.0, 0.0, 0.25]
    # image patch 3 (top right) holds no square pixel: no relation at all
    assert square[3].tolist() == [0.0, 0.0, 0.0, 0.0]
    # image patch 15 holds one pixel (6,6) of the small square in its top-left corner
    assert square[15].tolist() == [0.25, 0.0, 0.0, 0.0625]
    # cross: compressed patch m = 1 is [0.25, 0, 0.75, 0.25]; image patch 2 has 1 cross pixel, patch 6 has 3
    assert cross[2].tolist() == [0.0, 0.0625, 0.0, 0.0]
    assert cross[6].tolist() == [0.0, 0.125, 0.0, 0.0]
    assert cross[7].tolist() == [0.0, 0.0625, 0.0, 0.0]
    assert cross.sum() == cross[2].sum() + cross[6].sum() + cross[7].sum()


def test_gold_afma_equals_naive_reference_and_a_perfect_attention_has_zero_loss():
    labels = _toy_labels()
    assert torch.equal(_gold_attention(labels), naive_gold_attention(labels, 2, P, D))
    image_patches, feature_patches = gold_factors(labels, 2, P, D, (8, 8))
    perfect = AfmaFactors(image_patches, feature_patches, P, D, (8, 8))
    assert afma_mse(perfect, labels).item() == 0.0
    shifted = AfmaFactors(image_patches + 0.1, feature_patches, P, D, (8, 8))
    assert afma_mse(shifted, labels).item() > 0.0
