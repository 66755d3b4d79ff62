"""Dataset spec table and protocol folds (docs/PROTOCOL.md, "Datasets", "Cross-validation folds")."""
from __future__ import annotations

import pytest

from dataloaders.folds import fold_split
from dataloaders.specs import DATASET_SPECS, get_spec

CHAOST2_IDS = (1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39)


@pytest.mark.parametrize("name", sorted(DATASET_SPECS))
def test_every_spec_is_self_consistent(name):
    spec = DATASET_SPECS[name]
    assert spec.name == name
    assert spec.modality in ("MR", "CT")
    assert spec.normalization == ("global" if spec.modality == "CT" else "per_scan_zscore")
    assert list(spec.scan_ids) == sorted(set(spec.scan_ids))
    assert sorted(spec.stored_to_label.values()) == [0, *sorted(spec.organs)]
    assert set(spec.test_labels) <= set(spec.organs)
    assert all(set(group) <= set(spec.test_labels) for group in spec.setting2_groups)
    assert spec.n_folds * spec.queries_per_fold <= len(spec.scan_ids)


def test_table_holds_the_protocol_numbers():
    chaos, sabs, cmr, demo = (get_spec(name) for name in ("chaost2", "SABS", "cmr", "Demo"))
    assert chaos.scan_ids == CHAOST2_IDS
    assert chaos.organs == {1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}
    assert chaos.setting2_groups == ((1, 4), (2, 3))
    assert sabs.scan_ids == tuple(range(30)) and sabs.test_labels == (1, 2, 3, 6)
    assert sabs.organs[6] == "liver" and sabs.organs[1] == "spleen" and len(sabs.organs) == 13
    assert cmr.stored_to_label == {0: 0, 200: 1, 500: 2, 600: 3} and cmr.scan_ids == tuple(range(1, 36))
    assert demo.organs == chaos.organs and demo.stored_to_label == chaos.stored_to_label
    assert (chaos.supervoxel_min_size, cmr.supervoxel_min_size) == (5000, 1000)


def test_unknown_dataset_error_lists_known_names():
    with pytest.raises(KeyError, match="CHAOST2, CMR, DEMO, SABS"):
        get_spec("chaos")


def test_chaost2_folds_match_the_protocol():
    spec = get_spec("CHAOST2")
    first, last = fold_split(spec, 0), fold_split(spec, 4)
    assert (first.query_ids, first.support_ids) == ((1, 2, 3, 5), (8,))
    assert (last.query_ids, last.support_ids) == ((36, 37, 38, 39), (1,))
    assert first.train_ids == tuple(i for i in CHAOST2_IDS if i not in (1, 2, 3, 5, 8))
    assert len(first.train_ids) == 15 and len(last.train_ids) == 15
    assert fold_split(spec, 1).query_ids == (8, 10, 13, 15) and fold_split(spec, 1).support_ids == (19,)


@pytest.mark.parametrize("name", sorted(DATASET_SPECS))
def test_query_blocks_partition_the_scans_and_train_is_the_rest(name):
    spec = get_spec(name)
    blocks = [fold_split(spec, fold).query_ids for fold in range(spec.n_folds)]
    assert sorted(i for block in blocks for i in block) == sorted(spec.scan_ids)
    for fold in range(spec.n_folds):
        split = fold_split(spec, fold)
        assert len(split.support_ids) == 1 and split.support_ids[0] not in split.query_ids
        assert sorted(split.query_ids + split.support_ids + split.train_ids) == sorted(spec.scan_ids)
        assert len(split.train_ids) >= 5


def test_sabs_and_cmr_fold_rules():
    sabs, cmr = get_spec("SABS"), get_spec("CMR")
    for fold in range(5):
        assert fold_split(sabs, fold).query_ids == tuple(range(6 * fold, 6 * fold + 6))
        assert fold_split(sabs, fold).support_ids == ((6 * fold + 6) % 30,)
        assert fold_split(cmr, fold).query_ids == tuple(range(7 * fold + 1, 7 * fold + 8))
    assert fold_split(cmr, 0).support_ids == (8,) and fold_split(cmr, 4).support_ids == (1,)


def test_multi_shot_supports_follow_the_block_circularly():
    assert fold_split(get_spec("CHAOST2"), 4, n_shots=3).support_ids == (1, 2, 3)


def test_in_block_support_is_the_third_scan_of_the_block():
    split = fold_split(get_spec("CHAOST2"), 0, support_choice="in_block")
    assert split.support_ids == (3,) and split.query_ids == (1, 2, 5)
    assert 8 in split.train_ids and len(split.train_ids) == 16
    with pytest.raises(ValueError, match="in_block"):
        fold_split(get_spec("DEMO"), 0, support_choice="in_block")


@pytest.mark.parametrize("fold", [-1, 5, 1.0])
def test_bad_fold_index_is_rejected(fold):
    with pytest.raises(ValueError, match=r"0\.\.4"):
        fold_split(get_spec("CHAOST2"), fold)
