"""Losses by hand: class weights, ignore index, alignment averaging, soft Dice."""
import math

import pytest
import torch

from models.losses import alignment_loss, soft_dice_loss, weighted_cross_entropy


def test_weighted_cross_entropy_by_hand_with_ignored_pixel():
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # (1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    nll_background = -2.0 + math.log(math.exp(2.0) + 1.0)
    nll_foreground = -1.0 + math.log(1.0 + math.exp(1.0))
    expected = (0.05 * nll_background + 1.0 * nll_foreground) / 1.05
    assert weighted_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    unweighted = weighted_cross_entropy(logits, labels, class_weights=(1.0, 1.0)).item()
    assert unweighted == pytest.approx((nll_background + nll_foreground) / 2, rel=1e-5)


def test_all_ignored_labels_give_zero_loss_not_nan():
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_alignment_loss_is_plain_cross_entropy_summed_over_shots_divided_by_shots_and_batch():
    # support 1 pixel each: -log softmax of the labelled class, no class weights (PANet / SSL-ALPNet)
    logits = torch.tensor([[[[[0.0]], [[2.0]]], [[[1.0]], [[0.0]]]],   # episode 0: shots labelled 1, 0
                           [[[[3.0]], [[0.0]]], [[[0.0]], [[0.0]]]]])  # episode 1: shots labelled 1, 1
    masks = torch.tensor([[[[1.0]], [[0.0]]], [[[1.0]], [[1.0]]]])
    nll = lambda correct, other: -correct + math.log(math.exp(correct) + math.exp(other))
    episode_0 = (nll(2.0, 0.0) + nll(1.0, 0.0)) / 2
    episode_1 = (nll(0.0, 3.0) + nll(0.0, 0.0)) / 2
    assert alignment_loss(logits, masks).item() == pytest.approx((episode_0 + episode_1) / 2, rel=1e-5)
    skipped = torch.tensor([True, False])  # PANet skips an episode whose query has no predicted foreground
    assert alignment_loss(logits, masks, skipped).item() == pytest.approx(episode_0 / 2, rel=1e-5)


def test_alignment_loss_ignores_soft_and_ignore_labelled_support_pixels():
    logits = torch.tensor([[[[[0.0, 5.0, -5.0]], [[1.0, 0.0, 0.0]]]]])  # (1, 1, 2, 1, 3)
    masks = torch.tensor([[[[1.0, 0.5, 255.0]]]])  # only the first pixel is labelled (foreground)
    expected = -1.0 + math.log(1.0 + math.exp(1.0))
    assert alignment_loss(logits, masks).item() == pytest.approx(expected, rel=1e-5)


def test_soft_dice_loss_by_hand():
    logits = torch.tensor([[[[0.0, 0.0, 0.0]], [[math.log(3.0), -100.0, 0.0]]]])  # p_fg = 0.75, 0, 0.5
    labels = torch.tensor([[[1, 0, 255]]])
    expected = 1.0 - (2 * 0.75 + 1.0) / (0.75 + 1.0 + 1.0)
    assert soft_dice_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert soft_dice_loss(logits, labels, smooth=0.0).item() == pytest.approx(1.0 - 1.5 / 1.75, rel=1e-5)
