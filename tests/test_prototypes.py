"""The prototype toolbox: pooling, local pooling, cosine scores and class combination by hand."""
import math

import pytest
import torch

from models.prototypes import (
    combine_class_scores, cosine_scores, local_prototypes, masked_average_pool, resize_masks, window_coverage,
)


def test_masked_average_pool_equals_hand_computed_prototype():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(1, 1, 1, 2, 2)
    features = torch.cat([features, 10 * features], dim=2)  # (1, 1, 2, 2, 2)
    masks = torch.tensor([[[[[1.0, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]]])  # (1, 1, 2, 2, 2)
    prototypes, valid = masked_average_pool(features, masks)
    expected = (1.0 * 1 + 0.5 * 3) / 1.5
    assert prototypes.shape == (1, 1, 2, 2)
    assert prototypes[0, 0, 0].tolist() == pytest.approx([expected, 10 * expected], rel=1e-4)
    assert valid.tolist() == [[[True, False]]]
    assert torch.equal(prototypes[0, 0, 1], torch.zeros(2))


def test_local_prototypes_are_window_means_kept_strictly_above_the_coverage():
    features = torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    masks = torch.zeros(1, 1, 4, 4)
    masks[..., :2, :2] = 1.0  # window (0, 0) fully covered
    masks[..., 2:, 2:] = 1.0
    masks[..., 3, 3] = 0.0  # window (1, 1) covered exactly 0.75
    masks[..., 0, 2] = 1.0  # window (0, 1) a quarter covered
    prototypes, valid = local_prototypes(features, masks, window=2, coverage=0.75)
    assert prototypes.shape == (1, 4, 1) and valid.shape == (1, 4)
    assert prototypes[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]  # window means of the features
    assert valid[0].tolist() == [True, False, False, False]  # 0.75 is not above 0.75 (SSL-ALPNet's ">")
    assert window_coverage(masks, 2)[0, 0].tolist() == [[1.0, 0.25], [0.0, 0.75]]


def test_local_prototypes_of_all_shots_are_pooled_together():
    features = torch.randn(2, 3, 5, 8, 8)
    masks = torch.ones(2, 3, 8, 8)
    masks[1, 2] = 0.0
    prototypes, valid = local_prototypes(features, masks, window=4, coverage=0.95)
    assert prototypes.shape == (2, 3 * 4, 5)
    assert torch.allclose(prototypes[1, 8], features[1, 2, :, :4, :4].mean(dim=(-2, -1)), atol=1e-6)
    assert valid.sum(dim=1).tolist() == [12, 8]


def test_cosine_scores_by_hand_and_invalid_or_zero_prototypes_score_zero():
    query = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    prototypes = torch.tensor([[[1.0, 1.0], [0.0, -3.0], [5.0, 0.0], [0.0, 0.0], [-2.0, 0.0]]])
    valid = torch.tensor([[True, True, False, True, True]])
    scores = cosine_scores(query, prototypes, valid, scale=20.0)
    assert scores.shape == (1, 5, 1, 1)
    assert scores.flatten().tolist() == pytest.approx([20 / math.sqrt(2), 0.0, 0.0, 0.0, -20.0], abs=1e-4)


def test_combine_class_scores_softmax_weighted_sum_max_and_empty_class_scores_zero():
    scores = torch.tensor([1.0, 2.0, 50.0]).reshape(1, 3, 1, 1)
    valid = torch.tensor([[True, True, False]])
    expected = (math.exp(1) * 1 + math.exp(2) * 2) / (math.exp(1) + math.exp(2))
    assert combine_class_scores(scores, valid, "softmax").item() == pytest.approx(expected, rel=1e-5)
    assert combine_class_scores(scores, valid, "max").item() == 2.0
    no_prototype = torch.zeros(1, 3, dtype=torch.bool)
    assert combine_class_scores(scores, no_prototype, "softmax").item() == 0.0  # the originals' empty sum
    assert combine_class_scores(scores, no_prototype, "max", empty_score=-20.0).item() == -20.0
    with pytest.raises(ValueError, match="softmax"):
        combine_class_scores(scores, valid, "mean")


def test_resize_masks_keeps_sharp_regions_and_softens_edges():
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., :8, :] = 1.0
    resized = resize_masks(masks, (2, 2))
    assert resized.shape == (1, 1, 2, 2)
    assert resized.flatten().tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0], abs=1e-6)
    assert resize_masks(torch.ones(3, 64, 64), (8, 8)).min().item() == pytest.approx(1.0)
    edge = torch.zeros(1, 4, 4)
    edge[..., :, :1] = 1.0  # column 0 of a 4-pixel row; the 2-cell grid samples x = 0.5 and 2.5
    assert resize_masks(edge, (2, 2))[0, 0].tolist() == pytest.approx([0.5, 0.0])
