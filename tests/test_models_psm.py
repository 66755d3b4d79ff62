"""Prototype Splitting Module: partitions, cluster recovery, degenerate regions."""
import torch

from models.prototype_splitting import PrototypeSplittingModule


def _two_cluster_episode():
    """(1, 1, 2, 4, 4) features: left half of the mask points along x, right half along y."""
    features = torch.zeros(1, 1, 2, 4, 4)
    features[0, 0, 0, :, :2] = 1.0
    features[0, 0, 1, :, 2:] = 3.0
    masks = torch.zeros(1, 1, 4, 4)
    masks[..., 1:, :] = 1.0
    return features, masks


def test_sub_masks_partition_the_soft_class_mask():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 8, 6, 6, generator=generator)
    masks = torch.rand(2, 3, 6, 6, generator=generator) * (torch.rand(2, 3, 6, 6, generator=generator) > 0.3)
    split = PrototypeSplittingModule(n_splits=3, min_part_area=0.0)(features, masks)
    assert split.sub_masks.shape == (2, 3, 4, 6, 6)
    assert split.prototypes.shape == (2, 3, 5, 8) and split.valid.shape == (2, 3, 5)
    assert torch.allclose(split.sub_masks.sum(dim=2), masks, atol=1e-6)
    support = (split.sub_masks > 0).int()
    assert support.sum(dim=2).max().item() == 1  # no position in two parts
    assert (support.sum(dim=(-2, -1)) > 0).sum(dim=2).min().item() >= 2  # random features do split


def test_splitting_separates_two_feature_clusters():
    features, masks = _two_cluster_episode()
    split = PrototypeSplittingModule(n_splits=3, min_part_area=1.0)(features, masks)
    first_part = split.sub_masks[0, 0, 0]
    # global prototype (1/2, 3/2) is closer to the y cluster (cos 0.95 vs 0.32): A_1 is the right half
    assert torch.equal(first_part, masks[0, 0] * (torch.arange(4) >= 2))
    assert torch.allclose(split.prototypes[0, 0, 1], torch.tensor([0.0, 3.0]))
    assert torch.allclose(split.prototypes[0, 0, 2], torch.tensor([1.0, 0.0]))
    assert torch.allclose(split.prototypes[0, 0, 0], torch.tensor([0.5, 1.5]))
    # A_1, A_2 and the global prototype are valid; A_3 and R_3 are empty
    assert split.valid[0, 0].tolist() == [True, True, True, False, False]


def test_uniform_region_stops_cleanly_with_one_part():
    features = torch.full((1, 2, 4, 5, 5), 0.7)
    masks = torch.ones(1, 2, 5, 5)
    split = PrototypeSplittingModule(n_splits=3)(features, masks)
    assert torch.isfinite(split.prototypes).all()
    assert split.valid[0, 0].tolist() == [True, True, False, False, False]
    assert torch.equal(split.sub_masks[0, 0, 0], masks[0, 0])


def test_empty_class_mask_gives_no_valid_prototype_and_no_nan():
    split = PrototypeSplittingModule()(torch.randn(1, 1, 4, 5, 5), torch.zeros(1, 1, 5, 5))
    assert not split.valid.any()
    assert torch.isfinite(split.prototypes).all() and torch.isfinite(split.sub_masks).all()


def test_fixed_threshold_and_minimum_area_options():
    features, masks = _two_cluster_episode()
    everything = PrototypeSplittingModule(n_splits=2, split_threshold=-1.0)(features, masks)
    assert torch.equal(everything.sub_masks[0, 0, 0], masks[0, 0])
    strict = PrototypeSplittingModule(n_splits=1, min_part_area=7.0)(features, masks)
    # A_1 has 6 feature pixels (< 7): flagged invalid but still in the partition
    assert strict.valid[0, 0].tolist() == [True, False, False]
    assert strict.sub_masks[0, 0, 0].sum().item() == 6.0
