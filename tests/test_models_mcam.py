"""Multi-level cross attention: the original guide-to-query non-local block by hand, shots, the
query-to-support alternative, identity at start, guide maps."""
import math

import pytest
import torch
import torch.nn as nn

from models.cross_attention import (
    GUIDE_TO_QUERY, MCAM_DIRECTIONS, QUERY_TO_SUPPORT, GuideToQueryBlock, MultiLevelCrossAttention, QueryToSupportBlock,
)


def _episode(batch=2, shots=2, channels=8, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, channels, size, size, generator=generator)
    support = torch.randn(batch, shots, channels, size, size, generator=generator)
    masks = (torch.rand(batch, shots, size, size, generator=generator) > 0.5).float()
    global_prototypes = torch.randn(batch, shots, channels, generator=generator)
    parts = torch.randn(batch, shots, 3, channels, generator=generator)
    valid = torch.tensor([True, True, False]).expand(batch, shots, 3)
    return query, support, masks, global_prototypes, parts, valid


def _open_output_projections(module: nn.Module, seed=1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for block in module.modules():
        if isinstance(block, (GuideToQueryBlock, QueryToSupportBlock)):
            weight = block.output_projection.weight
            weight.data = torch.randn(weight.shape, generator=generator)
            block.output_projection.bias.data = torch.randn(weight.shape[0], generator=generator)


def _set_conv(conv: nn.Conv2d, weight, bias) -> None:
    conv.weight.data = torch.tensor(weight).reshape(2, 2, 1, 1)
    conv.bias.data = torch.tensor(bias)


@pytest.mark.parametrize("direction", MCAM_DIRECTIONS)
def test_mcam_is_identity_at_initialisation(direction):
    query, *support = _episode()
    assert torch.equal(MultiLevelCrossAttention(8, direction)(query, *support), query)


def test_guide_to_query_block_equals_the_non_local_formula_computed_by_hand():
    # 2 x 2 positions, C = 2: z_p = x_p + W (sum_q (theta(y_p) . phi(x_q)) g(x_q) / N) + b_W, N = 4
    theta = ([[1.0, 0.0], [0.5, -1.0]], [0.1, 0.0])
    phi = ([[0.0, 1.0], [1.0, 1.0]], [0.0, -0.2])
    g = ([[2.0, 0.0], [0.0, 1.0]], [0.3, 0.1])
    w = ([[1.0, -1.0], [0.0, 2.0]], [0.05, -0.05])
    block = GuideToQueryBlock(2)
    for conv, (weight, bias) in zip((block.guide_projection, block.key_projection, block.value_projection,
                                     block.output_projection), (theta, phi, g, w)):
        _set_conv(conv, weight, bias)
    x = [[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [0.5, 0.5]]  # query features per position (row-major 2 x 2)
    y = [[0.0, 0.0], [3.0, 1.0], [0.0, 0.0], [1.0, -2.0]]  # guide map per position, zero off the foreground

    def affine(params, vector):
        weight, bias = params
        return [sum(weight[row][col] * vector[col] for col in range(2)) + bias[row] for row in range(2)]

    expected = []
    for p in range(4):
        attended = [0.0, 0.0]
        for q in range(4):
            weight_pq = sum(a * b for a, b in zip(affine(theta, y[p]), affine(phi, x[q]))) / 4
            attended = [attended[c] + weight_pq * affine(g, x[q])[c] for c in range(2)]
        expected.append([x[p][c] + affine(w, attended)[c] for c in range(2)])

    query = torch.tensor(x).T.reshape(1, 2, 2, 2)
    guide = torch.tensor(y).T.reshape(1, 1, 2, 2, 2)
    output = block(query, guide, torch.zeros(1, 1, 2, 2))
    assert output.shape == (1, 2, 2, 2)
    assert output.reshape(2, 4).T.tolist() == [pytest.approx(row, abs=1e-5) for row in expected]


def test_guide_to_query_updates_each_query_position_from_the_guide_at_the_same_position():
    query, support, *_ = _episode(batch=1, shots=1)
    block = GuideToQueryBlock(8)
    _open_output_projections(block)
    before = block(query, support, torch.ones(1, 1, 4, 4))
    changed = support.clone()
    changed[..., 1, 2] += 5.0
    after = block(query, changed, torch.ones(1, 1, 4, 4))
    moved = (after - before).abs().sum(dim=1)[0] > 1e-4
    assert moved[1, 2] and moved.sum() == 1


def test_guide_to_query_masks_nothing_a_zero_guide_still_adds_the_projection_biases():
    query, *_ = _episode(batch=1)
    block = GuideToQueryBlock(8)
    _open_output_projections(block)
    zero_guide = torch.zeros(1, 1, 8, 4, 4)
    assert not torch.allclose(block(query, zero_guide, torch.zeros(1, 1, 4, 4)), query)
    nn.init.zeros_(block.guide_projection.bias)
    update = block(query, zero_guide, torch.zeros(1, 1, 4, 4)) - query
    assert torch.allclose(update, block.output_projection.bias[None, :, None, None].expand_as(update), atol=1e-6)


def test_guide_to_query_averages_one_update_per_shot():
    query, support, *_ = _episode(batch=2, shots=3)
    block = GuideToQueryBlock(8)
    _open_output_projections(block)
    masks = torch.ones(2, 1, 4, 4)
    per_shot = torch.stack([block(query, support[:, s : s + 1], masks) for s in range(3)])
    assert torch.allclose(block(query, support, masks.expand(-1, 3, -1, -1)), per_shot.mean(dim=0), atol=1e-5)


def test_a_support_batch_of_one_guides_every_query():
    query, support, masks, *prototypes = _episode(batch=3)
    for direction in MCAM_DIRECTIONS:
        module = MultiLevelCrossAttention(8, direction)
        _open_output_projections(module)
        shared = module(query, support[:1], masks[:1], *(tensor[:1] for tensor in prototypes))
        repeated = module(query, *(tensor[:1].expand(3, *tensor.shape[1:]) for tensor in (support, masks, *prototypes)))
        assert torch.allclose(shared, repeated, atol=1e-5)


def test_query_to_support_ignores_background_support_positions_and_empty_supports():
    query, support, masks, *prototypes = _episode()
    module = MultiLevelCrossAttention(8, QUERY_TO_SUPPORT)
    _open_output_projections(module)
    changed = support + 100.0 * (1.0 - masks).unsqueeze(2)
    before, after = module(query, support, masks, *prototypes), module(query, changed, masks, *prototypes)
    assert not torch.allclose(before, query)
    assert torch.allclose(before, after, atol=1e-5)
    assert torch.equal(module(query, support, torch.zeros_like(masks), *prototypes), query)


def test_query_to_support_softmax_attention_by_hand():
    block = QueryToSupportBlock(2)
    for linear in (block.query_projection, block.key_projection, block.value_projection, block.output_projection):
        nn.init.eye_(linear.weight)
        nn.init.zeros_(linear.bias)
    query = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    guide = torch.tensor([[2.0, 0.0], [0.0, 1.0], [9.0, 9.0]]).T.reshape(1, 1, 2, 1, 3)
    masks = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    weights = torch.tensor([math.exp(2 / math.sqrt(2)), 1.0])
    expected = torch.tensor([1.0, 0.0]) + (weights[0] * torch.tensor([2.0, 0.0]) + weights[1] * torch.tensor([0.0, 1.0])) / weights.sum()
    assert torch.allclose(block(query, guide, masks).flatten(), expected, atol=1e-5)


def test_unknown_direction_is_rejected():
    with pytest.raises(ValueError, match=GUIDE_TO_QUERY):
        MultiLevelCrossAttention(8, "support_to_query")


def test_local_guide_map_places_the_most_similar_split_prototype():
    support = torch.zeros(1, 1, 2, 1, 2)
    support[0, 0, 0, 0, 0] = 1.0  # position 0 points along x
    support[0, 0, 1, 0, 1] = 1.0  # position 1 along y
    masks = torch.tensor([[[[1.0, 0.5]]]])
    parts = torch.tensor([[[[0.0, 4.0], [3.0, 0.1], [5.0, 0.0]]]])
    valid = torch.tensor([[[True, True, False]]])
    guides = MultiLevelCrossAttention.guide_maps(support, masks, torch.ones(1, 1, 2), parts, valid)
    local = guides[1][0, 0, :, 0]
    assert torch.allclose(local[:, 0], torch.tensor([3.0, 0.1]))  # x-like part (the invalid one is skipped)
    assert torch.allclose(local[:, 1], 0.5 * torch.tensor([0.0, 4.0]))
    assert torch.allclose(guides[0][0, 0, :, 0], torch.tensor([[1.0, 0.5], [1.0, 0.5]]))
    assert torch.allclose(guides[2], support * masks.unsqueeze(2))
