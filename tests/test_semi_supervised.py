"""The semi-supervised track: SSL4MIS's U-Net, labelled subsets, batches, Mean Teacher's arithmetic,
the volume metrics, bad inputs, and train.py / test.py end to end with exact resume."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from config import composed_config, ex
from dataloaders.acdc import PATIENTS_TO_SLICES, labelled_slice_count
from dataloaders.semi_supervised_data import EvaluationVolume, acdc_data, semi_supervised_fold
from dataloaders.slice_batches import IGNORE_LABEL, LABELLED, UNLABELLED, SliceSet, TwoStreamSlices, slice_batches
from dataloaders.specs import get_spec
from evaluation.volume_scoring import class_extent, classes_absent, keep_largest_components, score_volume
from experiment.config_checks import ConfigError, check_training_config
from experiment.optimisation import poly_factor
from models import build_semi_supervised_method, model_track, uses_unlabelled
from models.losses import multiclass_dice_loss
from models.mean_teacher import MeanTeacher
from models.semi_supervised import ConsistencyRamp, sigmoid_rampup, update_ema
from models.unet import UNet
from utils.checkpoint import load_checkpoint
from utils.io import DataError, read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from summarize_folds import summary_tables  # noqa: E402  (a script, after the path set-up)

SHARED_ACDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "ACDC"
# parameters of SSL4MIS's UNet(in_chns=1, class_num=4), counted on its code/networks/unet.py
SSL4MIS_UNET_PARAMETERS = 1_813_764
SSL4MIS_UNET_PARAMETERS_5_CLASSES = 1_813_909
TINY_SIZE = 32  # synthetic slices and patches: two poolings short of nothing at 16 x 16 features / 16


# --- the network --------------------------------------------------------------------------------


def test_unet_has_the_parameter_count_of_ssl4mis_and_keeps_the_image_size():
    assert sum(parameter.numel() for parameter in UNet(1, 4).parameters()) == SSL4MIS_UNET_PARAMETERS
    assert sum(parameter.numel() for parameter in UNet(1, 5).parameters()) == SSL4MIS_UNET_PARAMETERS_5_CLASSES
    assert UNet(1, 4).eval()(torch.zeros(2, 1, 48, 64)).shape == (2, 4, 48, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        UNet(1, 4)(torch.zeros(1, 1, 40, 40))


def test_registry_knows_the_track_of_every_name():
    assert model_track("psmnet") == "few_shot" and model_track("mean_teacher") == "semi_supervised"
    assert uses_unlabelled("mean_teacher") and not uses_unlabelled("supervised") and not uses_unlabelled("psmnet")
    with pytest.raises(ValueError, match="semi-supervised methods: \\[.*'mean_teacher', .*'supervised'\\]"):
        model_track("unet3d")


# --- SSL4MIS's arithmetic, restated ----------------------------------------------------------------


def test_sigmoid_rampup_and_the_consistency_weight_follow_ssl4mis():
    assert sigmoid_rampup(0, 200) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(100, 200) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(500, 200) == 1.0 and sigmoid_rampup(3, 0) == 1.0
    ramp = ConsistencyRamp(weight=0.1, rampup_units=200, unit=150, start=1000)
    # iteration 15 000 is unit 100 of 200; iteration 15 149 still unit 100 (iter_num // 150)
    assert ramp(15_000) == ramp(15_149) == pytest.approx(0.1 * math.exp(-1.25))
    assert ramp(30_000) == pytest.approx(0.1)
    assert not ramp.active(999) and ramp.active(1000)


def test_ema_follows_the_student_with_ssl4mis_alpha():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [parameter.clone() for parameter in teacher.parameters()]
    update_ema(teacher, student, decay=0.99, iteration=0)  # alpha = min(1 - 1/1, 0.99) = 0: a copy
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))
    teacher.load_state_dict(dict(zip(("weight", "bias"), before)))
    update_ema(teacher, student, decay=0.99, iteration=3)  # alpha = 1 - 1/4 = 0.75
    assert torch.allclose(teacher.weight, 0.75 * before[0] + 0.25 * student.weight)
    teacher.load_state_dict(dict(zip(("weight", "bias"), before)))
    update_ema(teacher, student, decay=0.99, iteration=500)  # alpha capped at the decay
    assert torch.allclose(teacher.bias, 0.99 * before[1] + 0.01 * student.bias)


def test_multiclass_dice_loss_is_ssl4mis_dice_loss():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.softmax(torch.randn(3, 4, 8, 8, generator=generator), dim=1)
    labels = torch.randint(0, 4, (3, 8, 8), generator=generator)
    expected = 0.0
    for k in range(4):  # DiceLoss._dice_loss per class over the whole batch, then / n_classes
        score, target = probabilities[:, k], (labels == k).float()
        expected += 1 - (2 * (score * target).sum() + 1e-5) / ((score * score).sum() + (target * target).sum() + 1e-5)
    assert multiclass_dice_loss(probabilities, labels).item() == pytest.approx(expected.item() / 4, rel=1e-6)


def test_poly_schedule_runs_the_first_two_steps_at_the_full_rate():
    assert poly_factor(0, 100, 0.9) == poly_factor(1, 100, 0.9) == 1.0
    assert poly_factor(11, 100, 0.9) == pytest.approx((1 - 10 / 100) ** 0.9)


def test_mean_teacher_has_no_consistency_before_its_start_and_a_teacher_without_gradients():
    torch.manual_seed(0)
    method = build_semi_supervised_method("mean_teacher", 1, 3)
    images, labels = torch.rand(4, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    early = method.training_losses(images[:2], labels, images[2:], iteration=999)
    assert early.losses["consistency"].item() == 0.0 and early.logits.shape == (4, 3, 32, 32)
    late = method.training_losses(images[:2], labels, images[2:], iteration=1000)
    assert late.losses["consistency"].item() > 0
    assert late.scalars["consistency_weight"] == pytest.approx(0.1 * math.exp(-5 * (1 - 6 / 200) ** 2))
    assert not any(parameter.requires_grad for parameter in method.teacher.parameters())
    assert set(method.optimised_parameters()) == {"network"}
    assert len(method.optimised_parameters()["network"]) == len(list(method.network.parameters()))


# --- data: labelled subsets, batches ------------------------------------------------------------


def write_tiny_acdc(root: Path, n_slices: int = 12, n_labelled_patients_slices: int = 68,
                    unlabelled_labels: bool = True) -> Path:
    """An ACDC folder in SSL4MIS's layout: `n_slices` training slices, 2 validation and 2 test volumes."""
    folder = root / "ACDC"
    (folder / "data" / "slices").mkdir(parents=True)
    rng = np.random.default_rng(0)
    slice_ids = [f"patient{index:03d}_frame01_slice_{index}" for index in range(n_slices)]
    for index, slice_id in enumerate(slice_ids):
        label = np.zeros((TINY_SIZE, TINY_SIZE), np.uint8)
        label[8:20, 8:20] = 1 + index % 3
        with h5py.File(folder / "data" / "slices" / f"{slice_id}.h5", "w") as handle:
            handle["image"] = rng.random((TINY_SIZE, TINY_SIZE)).astype(np.float32) * 0.2 + label * 0.25
            if unlabelled_labels or index < 4:
                handle["label"] = label
    (folder / "train_slices.list").write_text("\n".join(slice_ids) + "\n")
    for name, frames in (("val.list", ["patient090_frame01", "patient091_frame01"]),
                         ("test.list", ["patient095_frame01", "patient096_frame01"])):
        (folder / name).write_text("\n".join(frames) + "\n")
        for frame in frames:
            label = np.zeros((3, TINY_SIZE, TINY_SIZE), np.uint8)
            label[:, 6:18, 6:18], label[:, 20:26, 20:26] = 1, 3
            with h5py.File(folder / "data" / f"{frame}.h5", "w") as handle:
                handle["image"] = (label * 0.3 + rng.random(label.shape) * 0.1).astype(np.float32)
                handle["label"] = label
    return folder


@pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason="../shared/data/ACDC not present")
def test_labelled_subsets_of_real_acdc_are_ssl4mis_patients():
    slices = (SHARED_ACDC / "train_slices.list").read_text().split()
    patients = lambda count: sorted({slice_id[:10] for slice_id in slices[:labelled_slice_count(count)]})  # noqa: E731
    assert patients(3) == ["patient038", "patient050", "patient099"]
    assert patients(7) == ["patient021", "patient038", "patient049", "patient050", "patient058", "patient099",
                           "patient100"]
    assert labelled_slice_count(140) == len(slices) == 1312
    assert PATIENTS_TO_SLICES == {3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 140: 1312}
    with pytest.raises(ValueError, match="\\[3, 7, 14, 21, 28, 35, 140\\]"):
        labelled_slice_count(5)


def test_unlabelled_slices_never_read_their_labels(tmp_path, monkeypatch):
    """Files of unlabelled slices without any label dataset still train; the labelled ones are the first N."""
    folder = write_tiny_acdc(tmp_path, unlabelled_labels=False)
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)  # 4 labelled slices in the tiny list
    data = acdc_data(folder, 3)
    assert len(data.labelled) == 4 and len(data.unlabelled) == 8 and data.unlabelled.labels is None
    assert data.labelled.ids == tuple(f"patient{index:03d}_frame01_slice_{index}" for index in range(4))
    slices = TwoStreamSlices(data.labelled, data.unlabelled, TINY_SIZE, 2, 2, augment=True, seed=3)
    batch = next(slice_batches(slices, 0, 0, 3))
    assert batch["image"].shape == (4, 1, TINY_SIZE, TINY_SIZE)
    assert (batch["label"][2:] == IGNORE_LABEL).all() and (batch["label"][:2] < 4).all()


def test_two_stream_batches_are_ssl4mis_shares_and_resume_exactly():
    labelled = SliceSet(tuple(map(str, range(10))), tuple(np.full((8, 8), i, np.float32) for i in range(10)),
                        tuple(np.zeros((8, 8), np.int64) for _ in range(10)), 2)
    unlabelled = SliceSet(tuple(map(str, range(7))), tuple(np.full((8, 8), 100 + i, np.float32) for i in range(7)),
                          None, 2)
    slices = TwoStreamSlices(labelled, unlabelled, 16, 3, 2, augment=False, seed=5)
    assert slices.steps_per_epoch == 3  # 10 // 3: TwoStreamBatchSampler drops the remainder
    epoch = slices.epoch_batches(0)
    streams = [[stream for _, _, stream, _ in batch] for batch in epoch]
    assert streams == [[LABELLED] * 3 + [UNLABELLED] * 2] * 3
    assert len({index for batch in epoch for _, _, stream, index in batch if stream == LABELLED}) == 9
    # the unlabelled stream is a chain of permutations: its first 7 draws are every slice once
    assert sorted(index for batch in epoch for _, _, stream, index in batch if stream == UNLABELLED)[:6] != []
    uninterrupted = slice_batches(slices, 0, 0, 5)
    reference = [next(uninterrupted)["image"] for _ in range(5)]
    resumed = slice_batches(slices, 2, 0, 5)
    assert all(torch.equal(next(resumed)["image"], expected) for expected in reference[2:])
    labelled_only = TwoStreamSlices(labelled, None, 16, 4, 0, augment=False, seed=5)
    assert labelled_only.steps_per_epoch == 3 and [len(batch) for batch in labelled_only.epoch_batches(0)] == [4, 4, 2]


def test_volume_dataset_fold_labels_the_few_shot_support_scan_first():
    spec = get_spec("CHAOST2")
    labelled, unlabelled, validation, test = semi_supervised_fold(spec, 0, 1, 2)
    assert labelled == (8,) and test == (1, 2, 3, 5)  # fold 0's support scan is the one after its queries
    assert validation == (10, 13) and len(unlabelled) == 13 and not set(unlabelled) & {1, 2, 3, 5, 8, 10, 13}
    assert semi_supervised_fold(spec, 0, 3, 2)[0] == (8, 10, 13)
    with pytest.raises(ValueError, match="labelled_scans=15 is out of range: expected 1..14"):
        semi_supervised_fold(spec, 0, 15, 2)


# --- metrics -------------------------------------------------------------------------------------


def test_volume_scores_on_hand_made_masks_and_the_ssl4mis_empty_rule():
    truth = np.zeros((2, 10, 10), np.int64)
    truth[:, 2:6, 2:6] = 1  # 32 voxels of class 1
    truth[0, 8, 8] = 2
    prediction = np.zeros_like(truth)
    prediction[:, 2:6, 3:7] = 1  # 24 overlap, 8 FP, 8 FN
    volume = EvaluationVolume("case", np.zeros(truth.shape, np.float32), truth, (1.0, 1.0, 1.0), "voxels")
    classes = {1: "a", 2: "b"}
    ssl4mis = {score.organ: score.values for score in
               score_volume(prediction, volume, classes, ("dice", "jaccard", "hd95", "asd"), "ssl4mis")}
    assert ssl4mis["a"]["dice"] == pytest.approx(48 / 64) and ssl4mis["a"]["jaccard"] == pytest.approx(24 / 40)
    assert ssl4mis["a"]["hd95"] == pytest.approx(1.0) and 0 < ssl4mis["a"]["asd"] <= 1.0
    assert ssl4mis["b"] == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}  # empty prediction: all 0
    project = {score.organ: score.values for score in
               score_volume(prediction, volume, classes, ("dice", "hd95"), "project")}
    assert project["b"]["dice"] == 0.0 and math.isnan(project["b"]["hd95"])


def test_organ_extent_scores_a_class_on_its_ground_truth_slices_only_and_skips_a_volume_without_it():
    """The few-shot protocol's block (first to last ground-truth slice, margin 0): a false positive in
    a slice without the class counts under "volume" (SSL4MIS) and not under "organ_extent"."""
    truth = np.zeros((6, 8, 8), np.int64)
    truth[2:4, 2:6, 2:6] = 1  # class 1 on slices 2-3: 32 voxels
    prediction = truth.copy()
    prediction[0, 0:4, 0:4] = 1  # 16 false positives on slice 0, outside the class's extent
    prediction[5, 0:2, 0:2] = 2  # class 2 predicted, absent from the truth
    volume = EvaluationVolume("case", np.zeros(truth.shape, np.float32), truth, (1.0, 1.0, 1.0), "voxels")
    classes = {1: "a", 2: "b"}
    whole = {score.organ: score for score in score_volume(prediction, volume, classes, ("dice",), "project")}
    extent = {score.organ: score for score in
              score_volume(prediction, volume, classes, ("dice",), "project", "organ_extent")}
    assert whole["a"].values["dice"] == pytest.approx(64 / 80) and whole["a"].counts.false_positives == 16
    assert extent["a"].values["dice"] == 1.0 and extent["a"].counts.false_positives == 0
    assert whole["b"].values["dice"] == 0.0 and "b" not in extent  # no extent: skipped, not scored
    assert classes_absent([volume], classes) == {"b": ["case"]}
    assert class_extent(truth == 1) == slice(2, 4) and class_extent(truth == 2) is None
    with pytest.raises(ValueError, match="scored_slices must be one of"):
        score_volume(prediction, volume, classes, ("dice",), "project", "slices")


def test_largest_component_keeps_each_class_its_largest_face_connected_blob_and_removes_a_far_false_positive():
    prediction = np.zeros((3, 12, 12), np.int64)
    prediction[0:2, 1:4, 1:4] = 1  # class 1: 18 voxels
    prediction[2, 10:12, 10:12] = 1  # class 1: 4 voxels, far away
    prediction[0, 4, 4] = 1  # touches the 18-voxel block at a corner only: a component of its own
    prediction[1, 8:10, 0:2] = 2  # class 2: one component of 4 voxels, kept whole
    kept = keep_largest_components(prediction, (1, 2))
    expected = prediction.copy()
    expected[2, 10:12, 10:12] = expected[0, 4, 4] = 0
    assert np.array_equal(kept, expected) and prediction[2, 10, 10] == 1  # the input is left as it was
    truth = np.zeros_like(prediction)
    truth[0:2, 1:4, 1:4] = 1
    volume = EvaluationVolume("case", np.zeros(truth.shape, np.float32), truth, (1.0, 1.0, 1.0), "voxels")
    before = score_volume(prediction, volume, {1: "a"}, ("dice", "hd95"), "project")[0].values
    after = score_volume(kept, volume, {1: "a"}, ("dice", "hd95"), "project")[0].values
    assert before["dice"] == pytest.approx(36 / 41) and before["hd95"] > 8  # the far voxels set HD95
    assert after == {"dice": 1.0, "hd95": 0.0}


# --- bad inputs ------------------------------------------------------------------------------------


def test_bad_acdc_files_are_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)
    folder = write_tiny_acdc(tmp_path / "no_label")
    first = folder / "data" / "slices" / "patient000_frame01_slice_0.h5"
    with h5py.File(first, "a") as handle:
        del handle["label"]
    with pytest.raises(DataError, match=f"{first}: no 'label' dataset"):
        acdc_data(folder, 3)
    folder = write_tiny_acdc(tmp_path / "bad_values")
    with h5py.File(folder / "data" / "slices" / "patient001_frame01_slice_1.h5", "a") as handle:
        handle["label"][0, 0] = 9
    with pytest.raises(DataError, match="slice_1.h5: 'label' holds label values \\[9\\] outside .*0..3"):
        acdc_data(folder, 3)
    folder = write_tiny_acdc(tmp_path / "missing")
    (folder / "data" / "slices" / "patient005_frame01_slice_5.h5").unlink()
    with pytest.raises(DataError, match="train_slices.list names 1 file\\(s\\) that do not exist"):
        acdc_data(folder, 3)
    with pytest.raises(DataError, match="need 136 slices, the list has 12"):
        acdc_data(folder, 7)


@pytest.mark.parametrize("updates, message", [
    ({"labelled_patients": 5}, "SSL4MIS defines ACDC's labelled subsets for \\[3, 7, 14, 21, 28, 35, 140\\]"),
    ({"labelled_batch_size": 12}, "leaves 12 unlabelled slices per batch, but 'supervised' trains on labelled"),
    ({"eval_fold": 2}, "ACDC has one split"),
    ({"image_size": 100}, "image_size=100 is out of range: supervised needs a positive multiple of 16"),
    ({"postprocessing": "biggest"}, "postprocessing='biggest'.*'none', 'largest_component'"),
])
def test_semi_supervised_config_errors_stop_before_step_one(updates, message):
    config = composed_config(["acdc", "supervised"], updates)
    with pytest.raises(ConfigError, match=message):
        check_training_config(config)


def test_mean_teacher_needs_an_unlabelled_share_and_volume_datasets_bound_the_labelled_scans():
    with pytest.raises(ConfigError, match="labelled_batch_size=24 is out of range for 'mean_teacher': expected 1..23"):
        check_training_config(composed_config(["acdc", "mean_teacher"], {"labelled_batch_size": 24}))
    with pytest.raises(ConfigError, match="labelled_scans=8 is out of range: expected 1..6"):
        check_training_config(composed_config(["demo", "mean_teacher"], {"labelled_scans": 8}))


def test_post_processing_is_refused_for_the_few_shot_track():
    with pytest.raises(ConfigError, match="postprocessing='largest_component' applies to the semi-supervised"):
        check_training_config(composed_config(["demo", "psmnet"], {"postprocessing": "largest_component"}))


# --- train.py and test.py ------------------------------------------------------------------------


def tiny_run_config(data_root: Path, runs_root: Path, **overrides) -> dict:
    return {"data_root": str(data_root), "runs_root": str(runs_root), "image_size": TINY_SIZE, "batch_size": 4,
            "labelled_batch_size": 2, "labelled_patients": 3, "n_steps": 6, "validate_every": 3,
            "checkpoint_every": 2, "log_every": 1, "eval_batch_size": 8, **overrides}


def test_mean_teacher_trains_resumes_exactly_and_test_scores_the_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)
    write_tiny_acdc(tmp_path / "data")
    options = {"--loglevel": "ERROR"}
    whole = tiny_run_config(tmp_path / "data", tmp_path / "runs_whole")
    ex.run("train", config_updates=whole, named_configs=["acdc", "mean_teacher", "cpu"], options=options)
    interrupted = tiny_run_config(tmp_path / "data", tmp_path / "runs_split")
    losses_of, calls = MeanTeacher.training_losses, []

    def interrupted_at_step_5(self, *args):
        calls.append(1)
        if len(calls) == 5:  # after the checkpoint of step 4
            raise KeyboardInterrupt
        return losses_of(self, *args)

    monkeypatch.setattr(MeanTeacher, "training_losses", interrupted_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        ex.run("train", config_updates=interrupted, named_configs=["acdc", "mean_teacher", "cpu"], options=options)
    monkeypatch.setattr(MeanTeacher, "training_losses", losses_of)
    ex.run("train", config_updates=interrupted, named_configs=["acdc", "mean_teacher", "cpu"], options=options)
    with pytest.raises(ValueError, match="cannot resume.*n_steps: 6 -> 8"):  # poly decay reads n_steps
        ex.run("train", config_updates={**interrupted, "n_steps": 8}, named_configs=["acdc", "mean_teacher", "cpu"],
               options=options)
    run_name = "ACDC_mean_teacher_labelled3_fold0"
    whole_state = load_checkpoint(tmp_path / "runs_whole" / run_name / "checkpoints" / "last.pth")
    split_state = load_checkpoint(tmp_path / "runs_split" / run_name / "checkpoints" / "last.pth")
    assert whole_state["step"] == split_state["step"] == 6
    assert any(name.startswith("teacher.") for name in whole_state["model"])
    for name, tensor in whole_state["model"].items():  # student and teacher, batch-norm statistics included
        assert torch.equal(tensor, split_state["model"][name]), name
    assert whole_state["extra"]["best_validation"] == split_state["extra"]["best_validation"]

    result = ex.run("test", config_updates=whole, named_configs=["acdc", "mean_teacher", "cpu"], options=options)
    summary = read_json(tmp_path / "runs_whole" / run_name / "evaluation_fold0" / "summary.json")
    assert summary["checkpoint"].endswith("best.pth") and summary["step"] == whole_state["extra"]["best_validation"]["step"]
    assert set(summary["organs"]) == {"RV", "Myo", "LV"} and summary["metrics"] == ["dice", "jaccard", "hd95", "asd"]
    assert summary["distance_unit"] == "voxels" and summary["metric_rules"] == "ssl4mis"
    table = (tmp_path / "runs_whole" / run_name / "evaluation_fold0" / "table.md").read_text()
    assert "| hd95 (voxels) | asd (voxels) |" in table and "(mm)" not in table
    assert len(summary["organs"]["LV"]["scans"]) == 2 and result.result == pytest.approx(summary["mean_dice"])


def test_demo_fold_trains_supervised_with_one_labelled_scan_and_scores_organs_in_mm(demo_root, tmp_path):
    """The volume datasets' regime end to end: the support scan of the fold labelled, the fold's query
    scans tested, every organ a class, distances in mm from the scans' spacing."""
    config = {"data_root": str(demo_root), "runs_root": str(tmp_path / "runs"), "image_size": TINY_SIZE,
              "batch_size": 2, "n_steps": 2, "validate_every": 2, "checkpoint_every": 2, "log_every": 1,
              "n_validation_scans": 1, "labelled_scans": 1}
    options = {"--loglevel": "ERROR"}
    ex.run("train", config_updates=config, named_configs=["demo", "supervised", "cpu"], options=options)
    ex.run("test", config_updates=config, named_configs=["demo", "supervised", "cpu"], options=options)
    run = tmp_path / "runs" / "DEMO_supervised_labelled1_fold0"
    summary = read_json(run / "evaluation_fold0" / "summary.json")
    spec = get_spec("DEMO")
    assert set(summary["organs"]) == set(spec.organs.values()) and summary["distance_unit"] == "mm"
    assert sorted(summary["organs"]["liver"]["scans"]) == sorted(map(str, semi_supervised_fold(spec, 0, 1, 1)[3]))
    assert summary["training_config"]["labelled_scans"] == 1 and summary["labelled"] == 1
    # scored as the few-shot track scores its query scans: an evaluation folder of its own, Dice never lower
    ex.run("test", config_updates={**config, "metric_rules": "project", "scored_slices": "organ_extent"},
           named_configs=["demo", "supervised", "cpu"], options=options)
    few_shot_block = read_json(run / "evaluation_fold0_rulesproject_slicesorgan_extent" / "summary.json")
    assert few_shot_block["scored_slices"] == "organ_extent" and few_shot_block["metric_rules"] == "project"
    assert few_shot_block["evaluation_options"]["scored_slices"] == "organ_extent"
    for organ, scores in summary["organs"].items():
        for scan, values in scores["scans"].items():
            assert few_shot_block["organs"][organ]["scans"][scan]["dice"] >= values["dice"] - 1e-12, (organ, scan)
    table = summary_tables([str(tmp_path / "runs" / "DEMO_supervised_labelled1")], ("dice",),
                           departures={"metric_rules": "project", "scored_slices": "organ_extent"})
    assert f"{100 * few_shot_block['mean_dice']:.2f}" in table
    # each class's largest component: a folder of its own, the predicted voxels never more
    ex.run("test", config_updates={**config, "postprocessing": "largest_component"},
           named_configs=["demo", "supervised", "cpu"], options=options)
    largest = read_json(run / "evaluation_fold0_postlargest_component" / "summary.json")
    assert largest["postprocessing"] == "largest_component" and largest["evaluation_options"]["postprocessing"] == \
        "largest_component"
    for organ, scores in summary["organs"].items():
        for scan, values in scores["scans"].items():
            predicted = largest["organs"][organ]["scans"][scan]
            assert (predicted["true_positives"] + predicted["false_positives"]
                    <= values["true_positives"] + values["false_positives"]), (organ, scan)
