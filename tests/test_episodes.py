"""Behaviour of the training and test episode datasets and of Setting-2 slice selection."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataloaders.augmentation import AugmentationParams
from dataloaders.episodes_superpixel import SuperpixelEpisodes
from dataloaders.episodes_supervised import SupervisedEpisodes
from dataloaders.folds import FoldSplit
from dataloaders.slice_selection import allowed_slices
from dataloaders.volumes import Scan, resize_slices_nearest
from evaluation.episodes import assign_parts, build_test_episodes, nearest_organ_slices, part_fractions
from utils.io import DataError
from utils.seeding import make_generator, worker_init_fn

SIZE = 32
LIVER, RIGHT_KIDNEY, LEFT_KIDNEY, SPLEEN = 1, 2, 3, 4
TINY_SUPERPIXEL = 9
MIN_AREA = 20
N_PARTS = 3  # the protocol's npart
PROTOCOL_SUPPORT_SLICES = 1  # the protocol: one support slice per support scan and chunk
SEED = 1234
EPISODES = 8  # episodes per epoch where the test reads the dataset's index, not its episodes
ANY_FOREGROUND = 1  # supervised episodes: a slice shows a class from one pixel on
SPACING_XYZ = (0.5, 0.75, 3.0)  # mm, as SimpleITK stores it: x, y, z
CHAOST2_SPACING_ZYX = (7.7, 1.25, 1.25)  # docs/PROTOCOL.md, "Datasets"


def chaost2_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared/data/CHAOST2"
    return Path(os.environ.get("FSMIS_CHAOST2_DIR", default))


needs_chaost2 = pytest.mark.skipif(not chaost2_dir().is_dir(),
                                   reason=f"CHAOST2 not found at {chaost2_dir()} (set FSMIS_CHAOST2_DIR)")


def make_scan(scan_id: int, labels: np.ndarray, superpixels: np.ndarray | None = None,
              native_labels: np.ndarray | None = None) -> Scan:
    """A Scan whose image encodes (scan id, z) so that tests can tell slices apart."""
    n_slices = labels.shape[0]
    rng = np.random.default_rng(scan_id)
    image = (rng.standard_normal(labels.shape) + np.arange(n_slices)[:, None, None] * 10).astype(np.float32)
    return Scan(scan_id=scan_id, image=image, labels=labels.astype(np.int64),
                native_labels=(labels if native_labels is None else native_labels).astype(np.int64),
                superpixels=superpixels, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0),
                direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def quadrant_superpixels(n_slices: int) -> np.ndarray:
    """Ids 1..4 on the four quadrants (256 px each) and a tiny id 5 (3 x 3) inside quadrant 4."""
    plane = np.zeros((SIZE, SIZE), dtype=np.int32)
    half = SIZE // 2
    plane[:half, :half], plane[:half, half:], plane[half:, :half], plane[half:, half:] = 1, 2, 3, 4
    plane[20:23, 20:23] = 5
    return np.repeat(plane[None], n_slices, axis=0)


def kidney_labels() -> np.ndarray:
    """Slices: 0 nothing, 1 right kidney, 2 left kidney, 3 both kidneys, 4 liver."""
    labels = np.zeros((5, SIZE, SIZE), dtype=np.int64)
    labels[1, 2:6, 2:6] = RIGHT_KIDNEY
    labels[2, 2:6, 20:24] = LEFT_KIDNEY
    labels[3, 2:6, 2:6], labels[3, 2:6, 20:24] = RIGHT_KIDNEY, LEFT_KIDNEY
    labels[4, 10:20, 10:20] = LIVER
    return labels


# ---------------------------------------------------------------- superpixel episodes

def test_superpixel_foreground_is_exactly_one_superpixel_of_the_chosen_slice():
    scans = {7: make_scan(7, np.zeros((4, SIZE, SIZE)), quadrant_superpixels(4))}
    dataset = SuperpixelEpisodes(scans, episodes_per_epoch=30, min_superpixel_area=MIN_AREA,
                                 augmentation=None, seed=1)
    chosen_ids = set()
    for index in range(len(dataset)):
        source = dataset.source(index)
        episode = dataset[index]
        expected = torch.from_numpy(scans[7].superpixels[source.z] == source.superpixel_id)
        assert torch.equal(episode["support_masks"][0], expected.float())
        assert torch.equal(episode["query_labels"], expected.long())
        for channel in range(3):
            assert torch.equal(episode["query_images"][channel], torch.from_numpy(scans[7].image[source.z]))
        chosen_ids.add(source.superpixel_id)
    assert chosen_ids == {1, 2, 3, 4}  # every large one is used, the tiny one never


def test_superpixel_episode_shapes_and_dtypes_with_augmentation():
    scans = [make_scan(3, np.zeros((2, SIZE, SIZE)), quadrant_superpixels(2))]
    episode = SuperpixelEpisodes(scans, n_shots=2, episodes_per_epoch=4, min_superpixel_area=MIN_AREA,
                                 seed=SEED)[0]
    assert episode["support_images"].shape == (2, 3, SIZE, SIZE) and episode["support_images"].dtype == torch.float32
    assert episode["support_masks"].shape == (2, SIZE, SIZE) and episode["support_masks"].dtype == torch.float32
    assert episode["query_images"].shape == (3, SIZE, SIZE) and episode["query_images"].dtype == torch.float32
    assert episode["query_labels"].shape == (SIZE, SIZE) and episode["query_labels"].dtype == torch.int64
    assert set(episode["support_masks"].unique().tolist()) <= {0.0, 1.0}
    assert set(episode["query_labels"].unique().tolist()) <= {0, 1}
    # the copies are augmented independently
    assert not torch.equal(episode["support_images"][0], episode["support_images"][1])


def test_too_small_superpixels_are_rejected_counted_and_slices_without_one_left_out():
    superpixels = quadrant_superpixels(3)
    superpixels[1] = 0
    superpixels[1, :3, :3] = 1  # slice 1: a single tiny superpixel, unusable
    superpixels[2] = 1
    superpixels[2, 20:23, 20:23] = 2  # slice 2: one large and one tiny superpixel
    dataset = SuperpixelEpisodes([make_scan(1, np.zeros((3, SIZE, SIZE)), superpixels)],
                                 episodes_per_epoch=60, min_superpixel_area=MIN_AREA, augmentation=None, seed=SEED)
    assert dataset.slices_without_superpixel == 1
    assert [entry.z for entry in dataset.slices] == [0, 2]
    for index in range(len(dataset)):
        dataset[index]
        source = dataset.source(index)
        assert (superpixels[source.z] == source.superpixel_id).sum() >= MIN_AREA
    assert dataset.rejected_superpixels > 0


def test_superpixel_episodes_are_deterministic_by_seed_and_epoch():
    scans = [make_scan(2, np.zeros((3, SIZE, SIZE)), quadrant_superpixels(3))]

    def episode(seed: int, epoch: int = 0) -> dict[str, torch.Tensor]:
        dataset = SuperpixelEpisodes(scans, episodes_per_epoch=5, min_superpixel_area=MIN_AREA, seed=seed)
        dataset.set_epoch(epoch)
        return dataset[3]

    first, again, other_seed, other_epoch = episode(5), episode(5), episode(6), episode(5, epoch=1)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["query_images"], other_seed["query_images"])
    assert not torch.equal(first["query_images"], other_epoch["query_images"])


def test_episodes_do_not_depend_on_the_number_of_workers():
    dataset = SuperpixelEpisodes([make_scan(2, np.zeros((3, SIZE, SIZE)), quadrant_superpixels(3))],
                                 episodes_per_epoch=6, min_superpixel_area=MIN_AREA, seed=9)

    def all_queries(workers: int) -> torch.Tensor:
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, worker_init_fn=worker_init_fn,
                            generator=make_generator(0))
        return torch.cat([batch["query_images"] for batch in loader])

    assert torch.equal(all_queries(0), all_queries(2))


def test_setting2_any_rule_removes_every_slice_with_an_excluded_kidney():
    scan = make_scan(1, kidney_labels(), quadrant_superpixels(5))
    dataset = SuperpixelEpisodes([scan], min_superpixel_area=MIN_AREA, episodes_per_epoch=EPISODES, seed=SEED,
                                 excluded_labels=(RIGHT_KIDNEY, LEFT_KIDNEY), augmentation=None)
    assert sorted(entry.z for entry in dataset.slices) == [0, 4]


def test_setting2_all_rule_keeps_slices_with_only_one_kidney():
    scan = make_scan(1, kidney_labels(), quadrant_superpixels(5))
    dataset = SuperpixelEpisodes([scan], min_superpixel_area=MIN_AREA, excluded_labels=(RIGHT_KIDNEY, LEFT_KIDNEY),
                                 exclusion_rule="all", augmentation=None, episodes_per_epoch=EPISODES, seed=SEED)
    assert sorted(entry.z for entry in dataset.slices) == [0, 1, 2, 4]


def test_setting2_reads_presence_at_native_resolution():
    native = np.zeros((2, 2 * SIZE, 2 * SIZE), dtype=np.int64)
    native[1, 0, 0] = LEFT_KIDNEY  # one native pixel that resizing could lose
    scan = make_scan(1, np.zeros((2, SIZE, SIZE)), quadrant_superpixels(2), native_labels=native)
    assert allowed_slices(scan.native_labels, (LEFT_KIDNEY,)).tolist() == [0]
    dataset = SuperpixelEpisodes([scan], min_superpixel_area=MIN_AREA, excluded_labels=(LEFT_KIDNEY,),
                                 episodes_per_epoch=EPISODES, seed=SEED)
    assert [entry.z for entry in dataset.slices] == [0]


def test_unknown_exclusion_rule_is_rejected():
    with pytest.raises(ValueError, match="exclusion rule"):
        allowed_slices(kidney_labels(), (RIGHT_KIDNEY,), rule="most")  # type: ignore[arg-type]


# ---------------------------------------------------------------- supervised episodes

def two_organ_scan(scan_id: int) -> Scan:
    """Liver in slices 1..3, spleen in slices 2..4, nothing in slice 0."""
    labels = np.zeros((5, SIZE, SIZE), dtype=np.int64)
    labels[1:4, 2:12, 2:12] = LIVER
    labels[2:5, 20:28, 20:28] = SPLEEN
    return make_scan(scan_id, labels)


def test_supervised_episodes_use_only_base_classes_from_other_scans():
    scans = {scan_id: two_organ_scan(scan_id) for scan_id in (1, 2, 3)}
    dataset = SupervisedEpisodes(scans, base_labels=[LIVER], n_shots=2, episodes_per_epoch=20, augmentation=None,
                                 min_foreground_area=ANY_FOREGROUND, seed=SEED)
    assert dataset.labels == [LIVER]
    for index in range(len(dataset)):
        label, (query_scan, query_z), supports = dataset.source(index)
        episode = dataset[index]
        assert label == LIVER and 1 <= query_z <= 3
        expected = torch.from_numpy(scans[query_scan].labels[query_z] == LIVER).long()
        assert torch.equal(episode["query_labels"], expected)  # the spleen is background
        assert len(supports) == 2 and len(set(supports)) == 2
        for shot, (scan_id, z) in enumerate(supports):
            assert scan_id != query_scan
            assert torch.equal(episode["support_masks"][shot],
                               torch.from_numpy(scans[scan_id].labels[z] == LIVER).float())


def test_supervised_episodes_fall_back_to_other_slices_of_a_single_scan():
    dataset = SupervisedEpisodes([two_organ_scan(4)], base_labels=[SPLEEN], episodes_per_epoch=10,
                                 augmentation=None, min_foreground_area=ANY_FOREGROUND, seed=SEED)
    for index in range(len(dataset)):
        _, query, supports = dataset.source(index)
        assert supports[0][0] == 4 and supports[0] != query


def test_supervised_setting2_removes_excluded_slices_and_refuses_excluded_base_classes():
    labels = kidney_labels()
    labels[0, 25:30, 25:30] = SPLEEN
    labels[3, 25:30, 25:30] = SPLEEN
    dataset = SupervisedEpisodes([make_scan(1, labels)], base_labels=[SPLEEN], episodes_per_epoch=EPISODES,
                                 excluded_labels=(RIGHT_KIDNEY, LEFT_KIDNEY), augmentation=None,
                                 min_foreground_area=ANY_FOREGROUND, seed=SEED)
    assert dataset.pools[SPLEEN][1].tolist() == [0]  # slice 3 also shows the kidneys
    with pytest.raises(ValueError, match="both base classes and excluded"):
        SupervisedEpisodes([make_scan(1, labels)], base_labels=[LIVER, RIGHT_KIDNEY], episodes_per_epoch=EPISODES,
                           excluded_labels=(RIGHT_KIDNEY,), min_foreground_area=ANY_FOREGROUND, seed=SEED)


# ---------------------------------------------------------------- test episodes

def organ_scan(scan_id: int, organ_slices: list[int], n_slices: int, native_size: int = SIZE) -> Scan:
    native = np.zeros((n_slices, native_size, native_size), dtype=np.int64)
    native[organ_slices, 4:10, 4:10] = LIVER
    labels = native[:, :SIZE, :SIZE] if native_size != SIZE else native
    return make_scan(scan_id, labels, native_labels=native)


def test_part_fractions_match_ssl_alpnet():
    assert part_fractions(1) == [0.5]
    np.testing.assert_allclose(part_fractions(3), [1 / 6, 1 / 2, 5 / 6])
    np.testing.assert_allclose(part_fractions(5), [0.1, 0.3, 0.5, 0.7, 0.9])


def test_support_slices_queries_parts_and_z_range_on_known_organ_ranges():
    scans = {
        10: organ_scan(10, [3, 4, 5, 7, 8, 9, 10, 12], n_slices=20),  # 8 organ slices
        20: organ_scan(20, list(range(2, 12)), n_slices=15, native_size=48),  # z-range 2..11
        21: organ_scan(21, [5], n_slices=9),  # a single organ slice
    }
    split = FoldSplit(query_ids=(20, 21), support_ids=(10,), train_ids=())
    first, second = build_test_episodes(scans, split, label=LIVER, organ="liver", n_parts=N_PARTS, z_margin=0,
                                        n_support_slices=PROTOCOL_SUPPORT_SLICES)

    # zlist[int(f * 8)] for f = 1/6, 1/2, 5/6 -> positions 1, 4, 6
    assert first.support_z_indices.tolist() == [[4], [8], [10]]
    assert first.support_images.shape == (3, 1, 3, SIZE, SIZE)
    assert first.support_masks.shape == (3, 1, SIZE, SIZE)
    assert torch.equal(first.support_images[1, 0, 2], torch.from_numpy(scans[10].image[8]))
    assert torch.equal(first.support_masks[2, 0], torch.from_numpy(scans[10].labels[10] == LIVER).float())

    assert first.query_scan_id == 20 and first.organ == "liver" and first.label == LIVER
    assert first.z_indices.tolist() == list(range(2, 12))
    # floor((z - 2) / 3), the last slice clipped from 3 to 2
    assert first.part_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert first.query_images.shape == (10, 3, SIZE, SIZE)
    assert torch.equal(first.query_images[0, 1], torch.from_numpy(scans[20].image[2]))
    assert first.query_labels.shape == (10, 48, 48) and first.query_labels.dtype == torch.int64
    assert int(first.query_labels.sum()) == 10 * 36
    assert first.volume_shape == (15, 48, 48)
    assert first.voxel_spacing == (3.0, 0.75, 0.5)  # the arrays' axis order (z, y, x)

    assert second.z_indices.tolist() == [5] and second.part_index.tolist() == [0]  # z_max == z_min


def test_z_margin_widens_the_range_and_clips_parts():
    scans = {10: organ_scan(10, [3, 4, 5], n_slices=8), 20: organ_scan(20, list(range(2, 12)), n_slices=13)}
    split = FoldSplit(query_ids=(20,), support_ids=(10,), train_ids=())
    (episode,) = build_test_episodes(scans, split, label=LIVER, organ="liver", n_parts=N_PARTS, z_margin=2,
                                     n_support_slices=PROTOCOL_SUPPORT_SLICES)
    assert episode.z_indices.tolist() == list(range(0, 13))  # 0..13 clipped to the volume's 0..12
    assert episode.part_index.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert assign_parts(np.array([1, 12]), 2, 11, 3).tolist() == [0, 2]


def test_k_shot_stacks_one_support_per_scan_and_missing_organ_is_an_error():
    scans = {10: organ_scan(10, [3, 4, 5], 8), 11: organ_scan(11, [1, 2, 3, 4, 5, 6], 8),
             20: organ_scan(20, [2, 3], 8), 30: organ_scan(30, [], 8)}
    (episode,) = build_test_episodes(scans, FoldSplit((20,), (10, 11), ()), label=LIVER, organ="liver",
                                     n_parts=N_PARTS, z_margin=0, n_support_slices=PROTOCOL_SUPPORT_SLICES)
    assert episode.support_images.shape == (3, 2, 3, SIZE, SIZE)
    assert episode.support_z_indices.tolist() == [[3, 2], [4, 4], [5, 6]]
    with pytest.raises(DataError, match="query scan 30"):
        build_test_episodes(scans, FoldSplit((30,), (10,), ()), label=LIVER, organ="liver", n_parts=N_PARTS,
                            z_margin=0, n_support_slices=PROTOCOL_SUPPORT_SLICES)
    with pytest.raises(DataError, match="not loaded"):
        build_test_episodes(scans, FoldSplit((99,), (10,), ()), label=LIVER, organ="liver", n_parts=N_PARTS,
                            z_margin=0, n_support_slices=PROTOCOL_SUPPORT_SLICES)


def test_n_support_slices_adds_the_nearest_organ_slices_of_each_chunk_as_shots():
    scans = {10: organ_scan(10, [3, 4, 5, 7, 8, 9, 10, 12], n_slices=20), 11: organ_scan(11, list(range(2, 9)), 10),
             20: organ_scan(20, list(range(2, 12)), n_slices=15)}
    split = FoldSplit(query_ids=(20,), support_ids=(10,), train_ids=())
    (one,) = build_test_episodes(scans, split, label=LIVER, organ="liver", n_parts=N_PARTS, z_margin=0,
                                 n_support_slices=PROTOCOL_SUPPORT_SLICES)
    (four,) = build_test_episodes(scans, split, label=LIVER, organ="liver", n_parts=N_PARTS, z_margin=0,
                                  n_support_slices=4)
    # chunk slices 4, 8, 10 (as with one slice), then the nearest organ slices, lower z first at a tie
    assert four.support_z_indices.tolist() == [[4, 3, 5, 7], [8, 7, 9, 10], [10, 9, 8, 12]]
    assert four.support_images.shape == (3, 4, 3, SIZE, SIZE) and four.support_masks.shape == (3, 4, SIZE, SIZE)
    assert four.support_scan_ids == (10, 10, 10, 10)
    for part in range(N_PARTS):
        assert len(set(four.support_z_indices[part].tolist())) == 4
        assert (four.support_masks[part].flatten(1).sum(dim=1) > 0).all()  # every shot shows the organ
        for shot, z in enumerate(four.support_z_indices[part].tolist()):
            assert torch.equal(four.support_images[part, shot, 0], torch.from_numpy(scans[10].image[z]))
    # the first shot is the protocol's support, and the query side is unchanged
    assert torch.equal(four.support_images[:, :1], one.support_images)
    assert torch.equal(four.support_masks[:, :1], one.support_masks)
    assert torch.equal(four.support_z_indices[:, :1], one.support_z_indices)
    for field in ("query_images", "query_labels", "part_index", "z_indices"):
        assert torch.equal(getattr(four, field), getattr(one, field)), field

    (two_scans,) = build_test_episodes(scans, FoldSplit((20,), (10, 11), ()), label=LIVER, organ="liver",
                                       n_parts=N_PARTS, z_margin=0, n_support_slices=2)
    assert two_scans.support_scan_ids == (10, 10, 11, 11)  # the slices of one scan adjacent
    assert two_scans.support_z_indices.tolist() == [[4, 3, 3, 2], [8, 7, 5, 4], [10, 9, 7, 6]]


def test_more_support_slices_than_the_organ_has_is_an_error_naming_the_scan():
    assert nearest_organ_slices(np.array([3, 4, 5]), 3, 3) == [3, 4, 5]  # at the organ's end: one side only
    scans = {10: organ_scan(10, [3, 4, 5], 8), 20: organ_scan(20, [2, 3], 8)}
    with pytest.raises(DataError, match="support scan 10, organ liver: 4 support slices .* in 3 slices"):
        build_test_episodes(scans, FoldSplit((20,), (10,), ()), label=LIVER, organ="liver", n_parts=N_PARTS,
                            z_margin=0, n_support_slices=4)


def test_support_slice_is_chosen_where_the_resized_mask_still_shows_the_organ():
    # at file resolution the organ is in slices 2, 3, 4; in slice 3 it is one pixel at an odd
    # position, which nearest-neighbour halving drops: the old choice zlist[int(0.5 * 3)] = 3
    # gave an empty support mask
    native_size = 2 * SIZE
    native = np.zeros((6, native_size, native_size), dtype=np.int64)
    native[[2, 4], 8:20, 8:20] = LIVER
    native[3, 9, 9] = LIVER
    support = make_scan(10, resize_slices_nearest(native, SIZE), native_labels=native)
    assert not (support.labels[3] == LIVER).any()
    scans = {10: support, 20: organ_scan(20, [1, 2], n_slices=4)}
    (episode,) = build_test_episodes(scans, FoldSplit((20,), (10,), ()), label=LIVER, organ="liver", n_parts=1,
                                     z_margin=0, n_support_slices=PROTOCOL_SUPPORT_SLICES)
    assert episode.support_z_indices.tolist() == [[4]]  # zlist [2, 4] at the model's resolution
    assert int(episode.support_masks.sum()) == 6 * 6


def test_support_organ_lost_by_resizing_everywhere_says_so():
    native = np.zeros((3, 2 * SIZE, 2 * SIZE), dtype=np.int64)
    native[1, 9, 9] = LIVER
    scans = {10: make_scan(10, resize_slices_nearest(native, SIZE), native_labels=native),
             20: organ_scan(20, [1], n_slices=3)}
    with pytest.raises(DataError, match=r"support scan 10: organ liver .* no slice at the model's resolution 32 x 32"):
        build_test_episodes(scans, FoldSplit((20,), (10,), ()), label=LIVER, organ="liver", n_parts=1, z_margin=0,
                            n_support_slices=PROTOCOL_SUPPORT_SLICES)


# ---------------------------------------------------------------- CHAOST2

@needs_chaost2
@pytest.mark.parametrize("fold, queries, support", [(0, [1, 2, 3, 5], (8,)), (4, [36, 37, 38, 39], (1,))])
def test_chaost2_test_episodes_use_the_protocol_fold_scans(fold, queries, support):
    from dataloaders.folds import fold_split
    from dataloaders.specs import get_spec
    from dataloaders.volumes import load_scans

    spec = get_spec("CHAOST2")
    split = fold_split(spec, fold)
    scans = load_scans(chaost2_dir(), spec, [*split.query_ids, *split.support_ids], image_size=SIZE)
    episodes = build_test_episodes(scans, split, label=SPLEEN, organ="spleen", n_parts=N_PARTS, z_margin=0,
                                   n_support_slices=PROTOCOL_SUPPORT_SLICES)
    assert [episode.query_scan_id for episode in episodes] == queries
    assert all(episode.support_scan_ids == support for episode in episodes)
    for episode in episodes:
        native = scans[episode.query_scan_id].native_labels
        present = np.flatnonzero((native == SPLEEN).any(axis=(1, 2)))
        assert episode.z_indices.tolist() == list(range(present[0], present[-1] + 1))
        assert episode.query_labels.shape[1:] == native.shape[1:]
        assert episode.part_index.min() == 0 and episode.part_index.max() == 2
        assert episode.voxel_spacing == pytest.approx(CHAOST2_SPACING_ZYX, abs=0.01)


@needs_chaost2
def test_chaost2_setting2_kidney_group_leaves_no_kidney_in_training_slices():
    from dataloaders.folds import fold_split
    from dataloaders.specs import get_spec
    from dataloaders.volumes import load_scans

    spec = get_spec("CHAOST2")
    train_ids = fold_split(spec, 0).train_ids[:3]
    scans = load_scans(chaost2_dir(), spec, train_ids, image_size=SIZE)
    kidneys = (RIGHT_KIDNEY, LEFT_KIDNEY)
    dataset = SupervisedEpisodes(scans, base_labels=[LIVER, SPLEEN], excluded_labels=kidneys, augmentation=None,
                                 episodes_per_epoch=EPISODES, min_foreground_area=ANY_FOREGROUND, seed=SEED)
    used = 0
    for scan_ids, zs in dataset.pools.values():
        for scan_id, z in zip(scan_ids, zs):
            assert not np.isin(scans[int(scan_id)].native_labels[z], kidneys).any()
            used += 1
    assert used > 0
    weak = {scan_id: allowed_slices(scan.native_labels, kidneys, rule="all") for scan_id, scan in scans.items()}
    strict = {scan_id: allowed_slices(scan.native_labels, kidneys, rule="any") for scan_id, scan in scans.items()}
    # the ALL rule keeps slices that show only one kidney, so it keeps strictly more
    assert sum(map(len, weak.values())) > sum(map(len, strict.values()))
    for scan_id, kept in weak.items():
        only_one = [z for z in np.setdiff1d(kept, strict[scan_id])
                    if np.isin(kidneys, scans[scan_id].native_labels[z]).sum() == 1]
        assert len(only_one) == len(np.setdiff1d(kept, strict[scan_id]))
