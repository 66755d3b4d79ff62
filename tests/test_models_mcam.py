"""Multi-level cross attention: identity at start, key masking, attention by hand."""
import math

import torch
import torch.nn as nn

from models.cross_attention import CrossAttentionBlock, MultiLevelCrossAttention


def _episode(batch=2, shots=2, channels=8, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, channels, size, size, generator=generator)
    support = torch.randn(batch, shots, channels, size, size, generator=generator)
    masks = (torch.rand(batch, shots, size, size, generator=generator) > 0.5).float()
    global_prototypes = torch.randn(batch, shots, channels, generator=generator)
    parts = torch.randn(batch, shots, 3, channels, generator=generator)
    valid = torch.tensor([True, True, False]).expand(batch, shots, 3)
    return query, support, masks, global_prototypes, parts, valid


def _open_output_projections(module: nn.Module) -> None:
    for block in module.modules():
        if isinstance(block, CrossAttentionBlock):
            nn.init.normal_(block.output_projection.weight)
            nn.init.normal_(block.output_projection.bias)


def test_mcam_is_identity_at_initialisation():
    query, *support = _episode()
    assert torch.equal(MultiLevelCrossAttention(8)(query, *support), query)


def test_empty_support_foreground_leaves_query_unchanged_without_nan():
    query, support, masks, *prototypes = _episode()
    for scaling in ("softmax", "mean"):
        module = MultiLevelCrossAttention(8, scaling)
        _open_output_projections(module)
        output = module(query, support, torch.zeros_like(masks), *prototypes)
        assert torch.equal(output, query)


def test_background_support_positions_are_not_attended():
    query, support, masks, *prototypes = _episode()
    module = MultiLevelCrossAttention(8)
    _open_output_projections(module)
    changed = support + 100.0 * (1.0 - masks).unsqueeze(2)
    before, after = module(query, support, masks, *prototypes), module(query, changed, masks, *prototypes)
    assert not torch.allclose(before, query)
    assert torch.allclose(before, after, atol=1e-5)


def _identity_block(scaling):
    block = CrossAttentionBlock(2, scaling)
    for linear in (block.query_projection, block.key_projection, block.value_projection, block.output_projection):
        nn.init.eye_(linear.weight)
        nn.init.zeros_(linear.bias)
    return block


def test_attention_formulas_by_hand():
    tokens = torch.tensor([[[1.0, 0.0]]])
    guide = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    key_mask = torch.tensor([[True, True, False]])
    weights = torch.tensor([math.exp(2 / math.sqrt(2)), 1.0])
    softmax_expected = tokens[0, 0] + (weights[0] * guide[0, 0] + weights[1] * guide[0, 1]) / weights.sum()
    assert torch.allclose(_identity_block("softmax")(tokens, guide, key_mask)[0, 0], softmax_expected, atol=1e-5)
    mean_expected = tokens[0, 0] + (2.0 * guide[0, 0] + 0.0 * guide[0, 1]) / 2
    assert torch.allclose(_identity_block("mean")(tokens, guide, key_mask)[0, 0], mean_expected, atol=1e-6)


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
