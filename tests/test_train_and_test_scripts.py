"""train.py and test.py through Sacred on small demo data: results, resume, tensorboard, errors,
evaluations bound to their checkpoint's run and training config, organs absent from a scan."""
from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sacred.utils import NamedConfigNotFoundError
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script
from config import ex
from conftest import TINY_IMAGE_SIZE, command_line_arguments, tiny_config
from dataloaders.folds import fold_split
from dataloaders.specs import get_spec
from evaluation.metrics import FEW_SHOT_METRICS, METRICS
from experiment.assembly import build_model_from_config, upgrade_saved_config
from experiment.config_checks import ConfigError
from experiment.layout import RunLayout
from experiment.provenance import ProvenanceError
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.io import DataError, read_array, read_image, read_json, write_array_like

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLEEN = 4  # the spleen's label in the demo scans
SCANS_WITHOUT_SPLEEN = (1, 4)  # fold 0: query scan 1, and scan 4, the first training scan (validation)


def last_checkpoint(run_dir: Path) -> Path:
    return RunLayout(run_dir).last_checkpoint


def run(command: str, config: dict, named_configs=("demo", "cpu")):
    return ex.run(command, config_updates=config, named_configs=list(named_configs), options={"--loglevel": "ERROR"})


def test_training_writes_checkpoint_with_config_and_tensorboard_curves(demo_root, tmp_path):
    run("train", tiny_config(demo_root, tmp_path))
    run_dir = tmp_path / "DEMO_setting1_psmnet_fold0"
    state = load_checkpoint(last_checkpoint(run_dir))
    assert state["step"] == 4
    assert state["config"]["model"]["encoder"] == "resnet18"
    assert state["config"]["image_size"] == TINY_IMAGE_SIZE

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalar_tags = set(events.Tags()["scalars"])
    organs = get_spec("DEMO").organs.values()
    assert {"loss/query_ce", "loss/alignment", "loss/total", "lr"} <= scalar_tags
    assert {f"validation_dice/{organ}" for organ in organs} <= scalar_tags
    assert [event.step for event in events.Scalars("loss/total")] == [1, 2, 3, 4]
    assert {"validation/support_query_prediction_truth", "train/support_query_prediction_truth"} <= set(
        events.Tags()["images"])
    assert (run_dir / "sacred" / "1" / "config.json").is_file()


def test_summary_agrees_with_dice_recomputed_from_saved_predictions(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path, save_predictions=True, save_overlays=True)
    run("train", config)
    mean_dice = run("test", config).result
    output_dir = tmp_path / "DEMO_setting1_psmnet_fold0" / "evaluation_fold0"
    summary = read_json(output_dir / "summary.json")

    spec = get_spec("DEMO")
    recomputed = {}
    assert summary["metrics"] == list(FEW_SHOT_METRICS)
    for organ, organ_summary in summary["organs"].items():
        label = organ_summary["label"]
        for scan_id, scores in organ_summary["scans"].items():
            prediction = read_array(output_dir / "predictions" / f"prediction_{organ}_scan{scan_id}.nii.gz")
            label_file = demo_root / "DEMO" / f"label_{scan_id}.nii.gz"
            truth = read_array(label_file).astype(int) == label
            spacing_zyx = read_image(label_file).GetSpacing()[::-1]
            # the protocol scores only the slices inside the organ's ground-truth z-range
            assert not prediction[~truth.any(axis=(1, 2))].any()
            for metric, definition in ((name, METRICS[name]) for name in FEW_SHOT_METRICS):
                expected = definition.compute(prediction, truth, spacing_zyx)
                assert scores[metric] == pytest.approx(expected, abs=1e-9, nan_ok=True), (organ, scan_id, metric)
            recomputed[(organ, scan_id)] = scores["dice"]
    assert set(summary["organs"]) == set(spec.organs.values())
    assert len(recomputed) == len(spec.organs) * spec.queries_per_fold
    organ_means = [np.mean([recomputed[(organ, s)] for s in summary["organs"][organ]["scans"]]) for organ in summary["organs"]]
    assert mean_dice == pytest.approx(float(np.mean(organ_means)))
    with (output_dir / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(recomputed) and set(FEW_SHOT_METRICS) <= set(rows[0])
    assert len(list((output_dir / "overlays").glob("*.png"))) == len(recomputed)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_run(demo_root, tmp_path):
    run("train", tiny_config(demo_root, tmp_path / "whole", n_steps=4))
    run("train", tiny_config(demo_root, tmp_path / "split", n_steps=2))  # "interrupted" after step 2
    run("train", tiny_config(demo_root, tmp_path / "split", n_steps=4))  # resumes at step 2
    whole = load_checkpoint(last_checkpoint(tmp_path / "whole" / "DEMO_setting1_psmnet_fold0"))
    split = load_checkpoint(last_checkpoint(tmp_path / "split" / "DEMO_setting1_psmnet_fold0"))
    assert split["step"] == whole["step"] == 4
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, split["model"][name]), name
    initial = load_checkpoint(last_checkpoint(tmp_path / "split" / "DEMO_setting1_psmnet_fold0"))
    assert initial["scheduler"] == whole["scheduler"]


def test_resumed_run_keeps_the_curve_points_of_its_checkpoint_step(demo_root, tmp_path):
    run("train", tiny_config(demo_root, tmp_path, n_steps=2))  # checkpoint and validation at step 2
    run("train", tiny_config(demo_root, tmp_path, n_steps=4))  # resumes from step 2
    events = EventAccumulator(str(tmp_path / "DEMO_setting1_psmnet_fold0" / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss/total")] == [1, 2, 3, 4]
    assert [event.step for event in events.Scalars("validation_dice/liver")] == [2, 4]


def test_a_copied_run_folder_resumes_under_its_new_name(demo_root, tmp_path, caplog):
    run("train", tiny_config(demo_root, tmp_path / "first", n_steps=2))
    shutil.copytree(tmp_path / "first" / "DEMO_setting1_psmnet_fold0", tmp_path / "second" / "extended")
    with caplog.at_level(logging.INFO, logger=train_script.logger.name):
        run("train", tiny_config(demo_root, tmp_path / "second", n_steps=3, run_name="extended"))
    assert "from step 2" in caplog.text
    assert load_checkpoint(last_checkpoint(tmp_path / "second" / "extended"))["step"] == 3


def test_resuming_with_a_different_training_config_is_refused(demo_root, tmp_path):
    run("train", tiny_config(demo_root, tmp_path, n_steps=2))
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        run("train", tiny_config(demo_root, tmp_path, n_steps=4, lr=0.5))


def test_a_run_saved_before_the_renamed_and_added_keys_still_resumes(demo_root, tmp_path):
    # before the split, one key `min_foreground_area` set both minimum areas
    current = run("resolved_config", tiny_config(demo_root, tmp_path, min_superpixel_area=100)).result
    saved = {key: value for key, value in current.items()
             if key not in ("min_superpixel_area", "min_supervised_foreground_area", "steps_per_epoch", "z_margin",
                            "n_support_slices", "scored_slices", "postprocessing")}
    saved["min_foreground_area"] = current["min_supervised_foreground_area"]
    train_script.check_resumable(upgrade_saved_config(saved), current, tmp_path / "last.pth")
    with pytest.raises(ValueError, match="cannot resume.*min_superpixel_area: 1 -> 100"):
        train_script.check_resumable(upgrade_saved_config({**saved, "min_foreground_area": 1}), current,
                                     tmp_path / "last.pth")


def test_a_psmnet_run_saved_before_its_background_windows_were_the_default_is_rebuilt_without_them(tmp_path):
    current = run("resolved_config", {}, named_configs=("demo", "cpu", "psmnet")).result
    saved = {key: value for key, value in current.items() if key != "empty_background_prototypes"}
    upgraded = upgrade_saved_config(saved)
    assert upgraded["model_options"] == {"use_local_background_prototypes": False}
    assert not build_model_from_config(upgraded).options.use_local_background_prototypes
    explicit = upgrade_saved_config({**saved, "model_options": {"use_local_background_prototypes": True}})
    assert explicit["model_options"] == {"use_local_background_prototypes": True}
    assert upgrade_saved_config(current)["model_options"] == {}  # today's config: today's defaults
    with pytest.raises(ValueError, match="cannot resume.*model_options"):  # another model than it trained
        train_script.check_resumable(upgraded, current, tmp_path / "last.pth")


def test_diverging_loss_stops_training_naming_the_step(demo_root, tmp_path):
    with pytest.raises(train_script.TrainingDiverged, match=r"step \d+: loss is (nan|inf)"):
        run("train", tiny_config(demo_root, tmp_path, lr=1e12, n_steps=20, validate_every=0))


def test_checkpoint_of_another_model_is_rejected(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    run("train", config, named_configs=("demo", "cpu", "alpnet"))
    checkpoint = last_checkpoint(tmp_path / "DEMO_setting1_alpnet_fold0")
    with pytest.raises(CheckpointError, match="does not match the requested model.*alpnet"):
        run("test", {**config, "run_name": "DEMO_setting1_alpnet_fold0"}, named_configs=("demo", "cpu", "psmnet"))
    assert checkpoint.is_file()


def test_an_evaluation_lives_in_the_run_of_its_checkpoint_and_records_where_its_scores_come_from(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    run("train", {**config, "run_name": "base"})
    run("train", {**config, "run_name": "other", "lr": 0.02}, named_configs=("demo", "cpu", "alpnet"))
    other_checkpoint = last_checkpoint(tmp_path / "other")
    with pytest.raises(ProvenanceError, match=r"belongs to run .*other, but run_name='base' names run .*base: its "
                                              r"scores would be written into another run's folder"):
        run("test", {**config, "run_name": "base", "checkpoint": str(other_checkpoint)})
    assert not (tmp_path / "base" / "evaluation_fold0").exists()

    run("test", {**config, "checkpoint": str(other_checkpoint)})
    assert not (tmp_path / "base" / "evaluation_fold0").exists()
    summary = read_json(tmp_path / "other" / "evaluation_fold0" / "summary.json")
    assert summary["checkpoint"] == str(other_checkpoint)
    assert summary["checkpoint_sha256"] == hashlib.sha256(other_checkpoint.read_bytes()).hexdigest()
    assert (summary["step"], summary["model_name"], summary["model_label"]) == (1, "alpnet", "alpnet")
    assert (summary["dataset"], summary["setting"], summary["label_group"], summary["eval_fold"]) == ("DEMO", 1, 0, 0)
    assert summary["training_config"]["lr"] == 0.02 and summary["training_config"]["run_name"] == "other"
    assert summary["config_mismatch"] == {} and summary["allow_config_mismatch"] is False

    stray = tmp_path / "stray.pth"
    shutil.copy(other_checkpoint, stray)
    with pytest.raises(ProvenanceError, match=r"stray\.pth: not inside a run folder"):
        run("test", {**config, "checkpoint": str(stray)})


def test_a_fold_or_setting_contradicting_the_checkpoint_is_refused_unless_explicitly_allowed(demo_root, tmp_path,
                                                                                            caplog):
    config = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0, run_name="base")
    run("train", config)
    with pytest.raises(ConfigError, match=r"eval_fold: requested 1, trained with 0 \(fold 1's query scans were among "
                                          r"its training scans\).*allow_config_mismatch=True"):
        run("test", {**config, "eval_fold": 1})
    with pytest.raises(ConfigError, match=r"setting: requested 2, trained with 1"):
        run("test", config, named_configs=("demo", "cpu", "setting2"))
    assert not list((tmp_path / "base").glob("evaluation_fold*"))

    with caplog.at_level(logging.WARNING, logger="experiment.provenance"):
        run("test", {**config, "eval_fold": 1, "allow_config_mismatch": True})
    assert "eval_fold: requested 1, trained with 0" in caplog.text
    summary = read_json(tmp_path / "base" / "evaluation_fold1" / "summary.json")
    assert summary["eval_fold"] == 1 and summary["allow_config_mismatch"] is True
    assert summary["config_mismatch"] == {"eval_fold": {"trained": 0, "evaluated": 1}}
    scored = {int(scan_id) for organ in summary["organs"].values() for scan_id in organ["scans"]}
    assert scored == set(fold_split(get_spec("DEMO"), 1).query_ids)


def test_setting_label_group_and_fold_are_taken_from_the_checkpoint(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    run("train", {**config, "setting": 2, "label_group": 1, "eval_fold": 2})
    run_dir = tmp_path / "DEMO_setting2_group1_psmnet_fold2"
    run("test", {**config, "checkpoint": str(last_checkpoint(run_dir))})  # the request names none of them
    summary = read_json(run_dir / "evaluation_fold2" / "summary.json")
    assert (summary["setting"], summary["label_group"], summary["eval_fold"]) == (2, 1, 2)
    assert set(summary["organs"]) == {"right_kidney", "left_kidney"}
    scored = {int(scan_id) for organ in summary["organs"].values() for scan_id in organ["scans"]}
    assert scored == set(fold_split(get_spec("DEMO"), 2).query_ids)


@pytest.fixture(scope="module")
def demo_root_without_spleen(demo_root, tmp_path_factory) -> Path:
    """The demo scans with the spleen erased from scan 1 (a query scan of fold 0) and scan 4 (fold
    0's first training scan, its validation scan)."""
    root = tmp_path_factory.mktemp("data_without_spleen")
    for path in (demo_root / "DEMO").glob("*_*.nii.gz"):
        (root / "DEMO").mkdir(exist_ok=True)
        shutil.copy(path, root / "DEMO" / path.name)
    for scan_id in SCANS_WITHOUT_SPLEEN:
        path = root / "DEMO" / f"label_{scan_id}.nii.gz"
        labels = read_array(path)
        labels[labels == SPLEEN] = 0
        write_array_like(labels, read_image(path), path)
    return root


def test_an_organ_absent_from_a_scan_is_skipped_in_validation_and_reported_at_test(demo_root_without_spleen, tmp_path,
                                                                                  capsys):
    config = tiny_config(demo_root_without_spleen, tmp_path, n_steps=2, validate_every=1, n_validation_scans=1)
    run("train", config)  # its validation scan has no spleen: the spleen is left out of validation
    run_dir = tmp_path / "DEMO_setting1_psmnet_fold0"
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("validation_dice/liver")] == [1, 2]
    assert "validation_dice/spleen" not in events.Tags()["scalars"]

    run("test", config)
    output_dir = run_dir / "evaluation_fold0"
    summary = read_json(output_dir / "summary.json")
    assert summary["skipped_scans"] == {"spleen": [1]} and summary["n_skipped_scans"] == 1
    assert set(summary["organs"]["spleen"]["scans"]) == {"2"}
    assert set(summary["organs"]["liver"]["scans"]) == {"1", "2"}
    note = "Skipped 1 query scan(s) of an organ absent from them, not scored"
    assert f"{note} (docs/PROTOCOL.md, \"Organs absent from a query scan\"): spleen: scan(s) 1" in capsys.readouterr().out
    assert note in (output_dir / "table.md").read_text()


def test_universeg_trains_without_alignment_and_tests_with_larger_support_sets(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path, n_steps=2, checkpoint_every=2, validate_every=2)
    run("train", config, named_configs=("demo", "setting1", "universeg", "cpu"))
    run_dir = tmp_path / "DEMO_setting1_universeg_fold0"
    state = load_checkpoint(last_checkpoint(run_dir))
    assert state["step"] == 2 and state["config"]["alignment_loss_weight"] == 0.0
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalar_tags = set(events.Tags()["scalars"])
    assert {"loss/query_ce", "loss/dice", "loss/total"} <= scalar_tags and "loss/alignment" not in scalar_tags
    mean_dices = [run("test", {**config, "n_support_slices": n_slices},
                      named_configs=("demo", "setting1", "universeg", "cpu")).result for n_slices in (1, 2)]
    assert all(0.0 <= dice <= 1.0 for dice in mean_dices)
    # the protocol's evaluation and the larger support set's lie side by side
    for folder, n_slices, dice in zip(("evaluation_fold0", "evaluation_fold0_support2"), (1, 2), mean_dices):
        summary = read_json(run_dir / folder / "summary.json")
        assert summary["n_support_slices"] == n_slices and summary["mean_dice"] == pytest.approx(dice)


def test_missing_data_root_names_the_folder_and_the_setting(tmp_path):
    with pytest.raises(DataError, match=r"DEMO.*not found.*data_root.*FSMIS_DATA_ROOT"):
        run("train", tiny_config(tmp_path / "nowhere", tmp_path))


def test_unknown_named_config_is_reported():
    with pytest.raises(NamedConfigNotFoundError, match="no_such_config"):
        run("train", {}, named_configs=("no_such_config",))


def test_command_line_prints_dice_table(demo_root, tmp_path):
    overrides = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    arguments = command_line_arguments(overrides)
    for script in ("train.py", "test.py"):
        result = subprocess.run([sys.executable, script, "with", "demo", "cpu", *arguments], cwd=REPO_ROOT,
                                capture_output=True, encoding="utf-8", timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "| organ |" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("| organ |"))
    liver_rows = [line for line in result.stdout.splitlines() if line.startswith("| liver |")]
    assert len(liver_rows) == 1
    columns = [cell.strip() for cell in header.split("|")]
    cells = [cell.strip() for cell in liver_rows[0].split("|")]
    assert columns[-6:-1] == ["dice (%)", "precision (%)", "recall (%)", "hd95 (mm)", "assd (mm)"]
    liver_dice = float(cells[columns.index("dice (%)")])  # every query scan has liver, so its Dice is a number
    assert 0.0 <= liver_dice <= 100.0


def test_fold_runner_trains_and_tests_a_fold_then_skips_it_when_run_again(demo_root, tmp_path):
    overrides = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    arguments = command_line_arguments(overrides)
    command = [sys.executable, "scripts/run_folds.py", "--folds", "0", "--", "with", "demo", "cpu", *arguments]
    outputs = []
    for _ in range(2):
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, encoding="utf-8", timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(result.stdout)
    assert "fold 0: train" in outputs[0] and "test.py" in outputs[0]
    assert "fold 0: evaluation up to date" in outputs[1] and "test.py" not in outputs[1]


def test_inspection_counts_prototypes_per_scheme_and_measures_mcam_updates(demo_root, tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from inspect_runs import (MCAM_VARIANTS, attention_update_norms, mcam_variant_scores, prototype_counts,
                              trained_model_and_test_episodes)
    from evaluation.scoring import evaluate_episodes, mean_and_std

    config = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    counts, update_norms = {}, {}
    for model in ("panet", "psmnet"):
        run("train", config, named_configs=("demo", "cpu", model))
        trained, episodes, run_config = trained_model_and_test_episodes(tmp_path / f"DEMO_setting1_{model}_fold0",
                                                                        None, None)
        counts[model] = prototype_counts(trained, episodes)
        update_norms[model] = attention_update_norms(trained, episodes)
    # the MCAM variants: "as trained" scores exactly as the model itself (no hook changes it)
    variant_scores = mcam_variant_scores(trained, episodes, run_config["eval_batch_size"])
    plain = evaluate_episodes(trained, episodes, torch.device("cpu"), "fp32", run_config["eval_batch_size"], ("dice",))
    assert tuple(variant_scores) == MCAM_VARIANTS
    assert variant_scores["as trained"]["dice"] == mean_and_std(list(plain.organ_means("dice").values()))[0]
    assert set(counts["panet"]) == {"liver", "right_kidney", "left_kidney", "spleen"}
    for organ, (foreground, background, area) in counts["panet"].items():
        assert (foreground, background) == (1.0, 1.0), organ  # one masked average per class
        # PSMnet: the global prototype, plus up to T = 3 parts and the remainder where they
        # reach the minimum part area (a kidney of a cell or two may give none); the background
        # adds its windows at test, 2 x 2 feature cells: up to 16 on the 8 x 8 grid
        psm_foreground, psm_background, psm_area = counts["psmnet"][organ]
        assert 1.0 <= psm_foreground <= 5.0 and 2.0 + 1.0 <= psm_background <= 5.0 + 16.0, organ
        assert psm_area == area > 0.0, organ  # same support slices and feature grid for both models
    # 64 px slices at output stride 8: 8 x 8 feature cells; the liver covers several, so it splits
    assert 4.0 < counts["panet"]["liver"][2] < 64.0
    assert counts["psmnet"]["liver"][0] >= 2.0
    # MCAM: three levels; after one step from zero-initialised output projections the updates are
    # tiny next to the query features; PANet has no MCAM
    assert update_norms["panet"] is None
    assert len(update_norms["psmnet"]) == 3
    for features, update, spread in update_norms["psmnet"]:
        assert features > 0.0 and 0.0 <= spread <= update < 0.05 * features


def test_mcam_variants_keep_centre_or_drop_every_levels_update():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from types import SimpleNamespace

    from inspect_runs import mcam_updates
    from models.cross_attention import MultiLevelCrossAttention

    torch.manual_seed(0)
    attention = MultiLevelCrossAttention(4)
    for block in attention.levels:  # zero-initialised output projections would give no update at all
        torch.nn.init.normal_(block.output_projection.weight)
        torch.nn.init.normal_(block.output_projection.bias)
    model = SimpleNamespace(cross_attention=attention)
    query, guide, masks = torch.randn(2, 4, 3, 3), torch.randn(1, 1, 4, 3, 3), torch.ones(1, 1, 3, 3)
    block = attention.levels[1]
    trained = block(query, guide, masks)
    update = trained - query  # (B, C, h, w)
    assert update.mean(dim=(2, 3)).abs().max() > 0.1  # a shift shared by all positions, to be removed
    with mcam_updates(model, "centred"):
        centred = block(query, guide, masks)
    torch.testing.assert_close(centred - query, update - update.mean(dim=(2, 3), keepdim=True))
    assert (centred - query).mean(dim=(2, 3)).abs().max() < 1e-5
    with mcam_updates(model, "dropped"):
        assert torch.equal(block(query, guide, masks), query)
    with mcam_updates(model, "as trained"):
        assert torch.equal(block(query, guide, masks), trained)
    assert torch.equal(block(query, guide, masks), trained)  # the hooks are gone after the block
    with pytest.raises(ValueError, match="MCAM variant must be one of"):
        with mcam_updates(model, "halved"):
            pass
