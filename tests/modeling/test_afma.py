"""AFMA without the attention matrix equals the naive, paper-literal computation."""
import pytest
import torch

from ros_amf.modeling.semantic.afma import AcrossFeatureMapAttention, patchify, unpatchify, work_budget
from ros_amf.modeling.semantic.loss import afma_mse, gold_factors
from tests.afma_reference import naive_afma_mse, naive_forward


def _random_case(height, width, classes, depth, patch, feature_channels=6, batch=2, embed_rows=160, seed=0,
                 block_elements=None):
    torch.manual_seed(seed)
    afma = AcrossFeatureMapAttention(feature_channels, classes, depth=depth, patch_size=patch,
                                     embed_rows=embed_rows, block_elements=block_elements).double()
    # bias the last MLP layer negative so the final ReLU zeroes many patch entries: A then has
    # exact zeros and the nonzero count varies from row to row, which the test must exercise
    torch.nn.init.normal_(afma.patch_mlp.layers[1].weight, mean=-0.15, std=0.3)
    image = torch.randn(batch, 3, height, width, dtype=torch.float64)
    features = [image] + [torch.randn(batch, feature_channels, height // 2 ** i, width // 2 ** i, dtype=torch.float64)
                          for i in range(1, 6)]
    logits = torch.randn(batch, classes, height, width, dtype=torch.float64)
    return afma, image, features, logits


def _relative_error(ours, reference):
    return ((ours - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("height,width,classes,depth,patch,embed_rows", [
    (80, 120, 3, 2, 10, 160),   # exact multiple of p·2^d, one strip
    (64, 96, 5, 1, 4, 8),       # many strips
    (64, 32, 2, 3, 2, 6),       # tall image, deeper attention
    (96, 64, 7, 2, 10, 20),     # needs padding to 120x80
    (32, 64, 4, 5, 1, 3),       # p = 1, d = 5, strip height not a multiple of the patch
])
@pytest.mark.parametrize("block_elements", [None, 7], ids=["one_block", "blocked"])
def test_matches_naive_reference_in_float64(height, width, classes, depth, patch, embed_rows, block_elements):
    # one_block: the accelerator path at these sizes (whole frame, all classes at once); blocked: a
    # 7-element budget forces image strips, row blocks of the count and one class at a time (the CPU path)
    afma, image, features, logits = _random_case(height, width, classes, depth, patch, embed_rows=embed_rows,
                                                 block_elements=block_elements)
    ours, factors = afma(image, features, logits)
    reference, attention = naive_forward(afma, image, features, logits)
    assert ours.shape == logits.shape
    assert _relative_error(factors.attention(), attention) <= 1e-5
    assert _relative_error(ours, reference) <= 1e-5
    counts = torch.count_nonzero(attention, dim=-1)
    assert torch.equal(factors.row_nonzero_counts(max_elements=7), counts)  # tiny blocks: same counts
    # the test is only meaningful if the correction is not zero and counts are not all equal
    assert not torch.equal(ours, logits)
    assert counts.unique().numel() > 1


@pytest.mark.parametrize("height,width,classes,depth,patch", [(40, 80, 3, 2, 10), (96, 64, 4, 1, 4)])
def test_factored_gold_mse_and_its_gradient_match_naive(height, width, classes, depth, patch):
    afma, image, features, logits = _random_case(height, width, classes, depth, patch, batch=1)
    labels = torch.randint(0, classes, (1, height, width))
    labels[:, :5, :7] = 255  # ignore pixels belong to no class
    factors = afma.attention_factors(image, features[depth])
    ours = afma_mse(factors, labels)
    grad_ours = torch.autograd.grad(ours, afma.patch_mlp.layers[0].weight)[0]
    _, attention = naive_forward(afma, image, features, logits)
    reference = naive_afma_mse(attention, labels, patch, depth)
    grad_reference = torch.autograd.grad(reference, afma.patch_mlp.layers[0].weight)[0]
    assert _relative_error(ours, reference) <= 1e-5
    assert _relative_error(grad_ours, grad_reference) <= 1e-5


def test_gradients_reach_every_afma_parameter_and_the_logits():
    afma, image, features, logits = _random_case(40, 40, 3, 2, 5)
    afma = afma.float()
    logits = logits.float().requires_grad_()
    features = [f.float() for f in features]
    output, factors = afma(features[0], features, logits)
    (output.sum() + afma_mse(factors, torch.randint(0, 3, (2, 40, 40)))).backward()
    assert logits.grad.abs().sum() > 0
    for name, parameter in afma.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gold_factors_class_by_class_equal_all_classes_at_once():
    labels = torch.randint(0, 4, (2, 40, 80))
    labels[:, :10, :10] = 255
    labels[0, 15, 15] = -1     # negative labels are ignored too
    whole = gold_factors(labels, 4, 10, 2, (40, 80))
    by_class = gold_factors(labels, 4, 10, 2, (40, 80), budget=1)
    for a, b in zip(whole, by_class):
        assert torch.equal(a, b)
    assert whole[0][:, :, 0].sum() == 0      # the top-left patch is all ignore
    assert whole[0][0, :, 9].sum() == 99     # patch (1, 1): 100 pixels, one of them -1


def test_the_accelerator_path_is_one_batched_pass_and_equals_the_cpu_path():
    # the block structure is chosen by device; the meta device takes the accelerator path
    afma = AcrossFeatureMapAttention(32, 12, patch_size=10)
    image, features = torch.randn(1, 3, 480, 640), [None, None, torch.randn(1, 32, 120, 160)]
    logits = torch.randn(1, 12, 480, 640)
    assert work_budget(torch.device("cpu")) < 64 * 480 * 640 <= work_budget(torch.device("meta"))
    with torch.no_grad():
        cpu_path, _ = afma(image, features, logits)
        afma.block_elements = work_budget(torch.device("meta"))
        one_pass, _ = afma(image, features, logits)
    assert _relative_error(one_pass, cpu_path) <= 1e-6
    assert not torch.equal(cpu_path, logits)


def test_fold_inverts_patchify():
    x = torch.arange(2 * 3 * 12 * 8).reshape(2, 3, 12, 8)
    assert torch.equal(unpatchify(patchify(x, 4), 4, 12, 8), x)
    assert patchify(x, 4)[0, 0, 1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31]


def test_wrong_feature_size_is_reported():
    afma = AcrossFeatureMapAttention(4, 3, depth=2)
    with pytest.raises(ValueError, match="features\\[2\\]"):
        afma.attention_factors(torch.randn(1, 3, 64, 64), torch.randn(1, 4, 32, 32))
