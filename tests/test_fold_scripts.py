"""scripts/summarize_folds.py, summarize_support_sizes.py, summarize_curves.py, compare_rows.py and
compare_evaluations.py on hand-written runs."""
import argparse
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from compare_evaluations import comparison_table  # noqa: E402
from compare_rows import comparison_tables  # noqa: E402
from experiment.fold_rows import evaluation_departure  # noqa: E402
from summarize_curves import curve_tables  # noqa: E402
import make_figures  # noqa: E402
from summarize_folds import summary_tables  # noqa: E402
from summarize_support_sizes import support_size_tables  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from utils.io import read_json, write_json  # noqa: E402

CHAOST2_LABELS = {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}


def write_summary(run_dir: Path, fold: int, organ_dice: dict[str, float], step: int = 100,
                  organ_hd95: dict[str, tuple[float, int]] | None = None, training: dict | None = None,
                  mismatch: dict | None = None, folder_suffix: str = "", options: dict | None = None,
                  distance_unit: str | None = None, checkpoint: str | None = None) -> Path:
    """A summary.json as test.py writes it; organ_hd95: {organ: (HD95 mean, scans without HD95)};
    training: the checkpoint's training config (None: a summary written before provenance was recorded);
    folder_suffix: after evaluation_fold<k> (e.g. _support4); options: its evaluation options (None: a
    summary written before they were recorded); distance_unit: as the semi-supervised track records it
    (None: not recorded, as the few-shot track's summaries, whose distances are in mm); checkpoint: the
    path of the checkpoint it scored (None: not recorded)."""
    folder = run_dir / f"evaluation_fold{fold}{folder_suffix}"
    organs = {organ: {"label": CHAOST2_LABELS[organ], "dice": dice, "scans": {}} for organ, dice in organ_dice.items()}
    for organ, (hd95, undefined) in (organ_hd95 or {}).items():
        organs[organ].update(hd95=hd95, undefined={"dice": 0, "hd95": undefined})
    mean = sum(organ_dice.values()) / len(organ_dice)
    summary = {"organs": organs, "mean_dice": mean, "step": step}
    if training is not None:
        summary.update(training_config={**training, "eval_fold": fold}, config_mismatch=mismatch or {},
                       allow_config_mismatch=bool(mismatch))
    if options is not None:
        summary["evaluation_options"] = options
    if distance_unit is not None:
        summary["distance_unit"] = distance_unit
    if checkpoint is not None:
        summary["checkpoint"] = checkpoint
    write_json(summary, folder / "summary.json")
    return folder


def training_config(**changes) -> dict:
    """A training config as checkpoints store it (the keys that matter here)."""
    return {"dataset": "CHAOST2", "setting": 1, "label_group": 0, "model": {"name": "psmnet", "encoder": "resnet101"},
            "model_options": {}, "lr": 1e-3, "n_steps": 100, "seed": 1234, "run_name": None, "device": "cuda",
            **changes}


def summary_table(rows: list[str], metric: str = "dice") -> str:
    """The table of one metric in summarize_folds' output (after its title line)."""
    return summary_tables(rows, (metric,)).split("\n\n")[1]


def test_fold_table_reports_mean_and_population_std_over_folds(tmp_path):
    write_summary(tmp_path / "X_setting1_psmnet_fold0", 0, {"liver": 0.80, "spleen": 0.60})
    write_summary(tmp_path / "X_setting1_psmnet_fold1", 1, {"liver": 0.70, "spleen": 0.40})
    table = summary_table([str(tmp_path / "X_setting1_psmnet")])
    row = table.splitlines()[2]
    assert row == "| X_setting1_psmnet | 2 | 75.00 ± 5.00 | 50.00 ± 10.00 | 62.50 ± 7.50 |"


def test_per_fold_table_lists_each_folds_organ_mean_and_marks_missing_folds(tmp_path):
    write_summary(tmp_path / "X_setting1_psmnet_fold0", 0, {"liver": 0.5, "spleen": 0.3})
    write_summary(tmp_path / "X_setting1_psmnet_fold2", 2, {"liver": 0.9, "spleen": 0.6})
    write_summary(tmp_path / "X_setting1_alpnet_fold1", 1, {"liver": 0.2, "spleen": 0.1})
    sections = summary_tables([str(tmp_path / "X_setting1_psmnet"), str(tmp_path / "X_setting1_alpnet")],
                              ("dice",)).split("\n\n")
    assert sections[2] == "dice (%), organs' mean per fold"
    assert sections[3].splitlines() == ["| method | fold 0 | fold 1 | fold 2 |", "|---|---|---|---|",
                                        "| X_setting1_psmnet | 40.00 | - | 75.00 |",
                                        "| X_setting1_alpnet | - | 15.00 | - |"]


def test_setting2_fold_with_one_organ_group_missing_is_left_out_with_a_note(tmp_path):
    write_summary(tmp_path / "X_setting2_group0_psmnet_fold0", 0, {"liver": 0.6, "spleen": 0.4})
    write_summary(tmp_path / "X_setting2_group1_psmnet_fold0", 0, {"right_kidney": 0.8, "left_kidney": 0.6})
    write_summary(tmp_path / "X_setting2_group0_psmnet_fold1", 1, {"liver": 0.2, "spleen": 0.2})  # group 1 still training
    row = f"{tmp_path / 'X_setting2_group0_psmnet'}+{tmp_path / 'X_setting2_group1_psmnet'}"
    sections = summary_tables([row], ("dice",)).split("\n\n")
    assert sections[1].splitlines()[2].endswith("| 1 | 60.00 ± 0.00 | 80.00 ± 0.00 | 60.00 ± 0.00 | 40.00 ± 0.00 | 60.00 ± 0.00 |")
    assert sections[3].splitlines()[0] == "| method | fold 0 |"
    assert sections[-1].endswith(f"fold 1 left out, not evaluated for {tmp_path / 'X_setting2_group1_psmnet'}")


def test_fold_table_of_a_support_size_reads_the_evaluations_with_that_many_slices(tmp_path):
    write_summary(tmp_path / "X_setting1_universeg_fold0", 0, {"liver": 0.50})
    write_summary(tmp_path / "X_setting1_universeg_fold0", 0, {"liver": 0.70}, folder_suffix="_support4")
    rows = [str(tmp_path / "X_setting1_universeg")]
    assert summary_table(rows).splitlines()[2] == "| X_setting1_universeg | 1 | 50.00 ± 0.00 | 50.00 ± 0.00 |"
    support4 = summary_tables(rows, ("dice",), n_support_slices=4).split("\n\n")[1]
    assert support4.splitlines()[2] == "| X_setting1_universeg | 1 | 70.00 ± 0.00 | 70.00 ± 0.00 |"
    with pytest.raises(SystemExit, match="no evaluated folds"):
        summary_tables(rows, ("dice",), n_support_slices=8)


def test_setting2_groups_joined_with_plus_form_one_row(tmp_path):
    for fold, (liver, kidney) in enumerate([(0.9, 0.5), (0.7, 0.7)]):
        write_summary(tmp_path / f"X_setting2_group0_alpnet_fold{fold}", fold, {"liver": liver})
        write_summary(tmp_path / f"X_setting2_group1_alpnet_fold{fold}", fold, {"right_kidney": kidney})
    prefixes = f"{tmp_path}/X_setting2_group0_alpnet+{tmp_path}/X_setting2_group1_alpnet"
    lines = summary_table([prefixes]).splitlines()
    assert lines[0] == "| method | folds | liver | right_kidney | mean |"
    assert lines[2].endswith("| 2 | 80.00 ± 10.00 | 60.00 ± 10.00 | 70.00 ± 0.00 |")


def test_organ_columns_follow_label_ids_not_names(tmp_path):
    write_summary(tmp_path / "X_setting1_alpnet_fold0", 0, {"spleen": 0.4, "left_kidney": 0.3, "liver": 0.1})
    header = summary_table([str(tmp_path / "X_setting1_alpnet")]).splitlines()[0]
    assert header == "| method | folds | liver | left_kidney | spleen | mean |"


def test_hd95_table_in_millimetres_notes_scans_without_a_value(tmp_path):
    write_summary(tmp_path / "X_setting1_psmnet_fold0", 0, {"liver": 0.8, "spleen": 0.6},
                  organ_hd95={"liver": (10.0, 0), "spleen": (30.0, 1)})
    write_summary(tmp_path / "X_setting1_psmnet_fold1", 1, {"liver": 0.7, "spleen": 0.4},
                  organ_hd95={"liver": (20.0, 0), "spleen": (50.0, 0)})
    write_summary(tmp_path / "X_setting1_alpnet_fold0", 0, {"liver": 0.5})  # written before HD95 existed
    output = summary_tables([str(tmp_path / "X_setting1_psmnet"), str(tmp_path / "X_setting1_alpnet")], ("dice", "hd95"))
    dice_section, hd95_section = output.split("hd95 (mm), mean ± std over folds")
    assert dice_section.startswith("dice (%), mean ± std over folds")
    lines = hd95_section.split("\n\n")[1].splitlines()
    assert lines[0] == "| method | folds | liver | spleen | mean |"
    # folds' organ means 20 and 35 mm
    assert lines[2] == "| X_setting1_psmnet | 2 | 15.00 ± 5.00 | 40.00 ± 10.00 | 27.50 ± 7.50 |"
    assert lines[3] == "| X_setting1_alpnet | 1 | n/a | n/a | n/a |"
    assert hd95_section.rstrip().endswith("X_setting1_psmnet: 1 query scan(s) without a value (empty prediction), "
                                          "left out of the means")


def test_distances_recorded_in_voxels_are_headed_in_voxels_and_never_mixed_with_millimetres(tmp_path):
    """ACDC stores no spacing: its HD95 is in voxels (summary.json's distance_unit), and a table or a
    paired comparison must say so; rows in voxels and in mm cannot share a column."""
    write_summary(tmp_path / "ACDC_supervised_fold0", 0, {"liver": 0.5}, organ_hd95={"liver": (4.0, 0)},
                  distance_unit="voxels")
    write_summary(tmp_path / "ACDC_mean_teacher_fold0", 0, {"liver": 0.7}, organ_hd95={"liver": (3.0, 0)},
                  distance_unit="voxels")
    write_summary(tmp_path / "X_setting1_psmnet_fold0", 0, {"liver": 0.8}, organ_hd95={"liver": (10.0, 0)})
    voxel_rows = [str(tmp_path / "ACDC_supervised"), str(tmp_path / "ACDC_mean_teacher")]
    output = summary_tables(voxel_rows, ("dice", "hd95"))
    assert "hd95 (voxels), mean ± std over folds" in output and "hd95 (voxels), organs' mean per fold" in output
    assert "(mm)" not in output and "dice (%), mean ± std over folds" in output
    comparison = comparison_tables([tuple(voxel_rows)], ("hd95",))
    assert comparison.startswith("hd95 (voxels), organs' mean: A minus B per fold")
    with pytest.raises(SystemExit, match=r"different units \(ACDC_supervised: voxels; .*X_setting1_psmnet: mm\)"):
        summary_tables([voxel_rows[0], str(tmp_path / "X_setting1_psmnet")], ("hd95",))


def test_departures_name_the_evaluation_folders_test_py_writes_and_unknown_keys_are_refused(tmp_path):
    write_summary(tmp_path / "X_mean_teacher_labelled1_fold0", 0, {"liver": 0.5},
                  folder_suffix="_rulesproject_slicesorgan_extent")
    departures = dict(map(evaluation_departure, ["scored_slices=organ_extent", "metric_rules=project"]))
    output = summary_tables([str(tmp_path / "X_mean_teacher_labelled1")], ("dice",), departures=departures)
    assert "| X_mean_teacher_labelled1 | 1 | 50.00 ± 0.00 | 50.00 ± 0.00 |" in output
    with pytest.raises(SystemExit, match="expected <prefix>_fold<k>/evaluation_fold<k>_rulesproject/summary.json"):
        summary_tables([str(tmp_path / "X_mean_teacher_labelled1")], ("dice",), departures={"metric_rules": "project"})
    for text in ("metric_rules", "colour=red", "scored_slices="):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE with KEY one of"):
            evaluation_departure(text)


def test_missing_folds_are_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no evaluated folds"):
        summary_table([str(tmp_path / "nothing_here")])


def test_folds_of_one_model_and_config_form_a_row_whatever_their_bookkeeping(tmp_path):
    write_summary(tmp_path / "X_setting1_psmnet_fold0", 0, {"liver": 0.8}, training=training_config())
    write_summary(tmp_path / "X_setting1_psmnet_fold1", 1, {"liver": 0.6},
                  training=training_config(device="cpu", run_name="X_setting1_psmnet_fold1"))
    assert summary_table([str(tmp_path / "X_setting1_psmnet")]).splitlines()[2].startswith("| X_setting1_psmnet | 2 |")


@pytest.mark.parametrize("changes,key", [(dict(model={"name": "alpnet", "encoder": "resnet101"}), "model"),
                                         (dict(lr=0.01), "lr"), (dict(setting=2), "setting"),
                                         (dict(model_options={"use_mcam": False}), "model_options")])
def test_a_row_mixing_models_or_training_configs_is_refused_naming_the_key(tmp_path, changes, key):
    write_summary(tmp_path / "X_setting1_psmnet_fold0", 0, {"liver": 0.8}, training=training_config())
    write_summary(tmp_path / "X_setting1_psmnet_fold1", 1, {"liver": 0.6}, training=training_config(**changes))
    with pytest.raises(SystemExit, match=rf"trained with different {key} \("):
        summary_table([str(tmp_path / "X_setting1_psmnet")])


def test_folds_may_differ_in_step_only_where_each_checkpoint_was_selected_by_validation(tmp_path):
    for name, checkpoint in (("X_psmnet", "last.pth"), ("Y_mean_teacher", "best.pth")):
        for fold, step in ((0, 1000), (1, 2000)):
            write_summary(tmp_path / f"{name}_fold{fold}", fold, {"liver": 0.5 + fold / 10}, step=step,
                          training=training_config(), checkpoint=f"{name}_fold{fold}/checkpoints/{checkpoint}")
    with pytest.raises(SystemExit, match=r"checkpoints of different training steps \(1000 vs 2000\)"):
        summary_table([str(tmp_path / "X_psmnet")])
    assert summary_table([str(tmp_path / "Y_mean_teacher")]).splitlines()[2].startswith("| Y_mean_teacher | 2 | 55.00")


def test_a_row_refuses_a_fold_evaluated_against_its_training_config_or_trained_on_another_fold(tmp_path):
    write_summary(tmp_path / "X_psmnet_fold0", 0, {"liver": 0.8}, training=training_config(),
                  mismatch={"eval_fold": {"trained": 1, "evaluated": 0}})
    with pytest.raises(SystemExit, match="allow_config_mismatch=True .*eval_fold: requested 0, trained with 1"):
        summary_table([str(tmp_path / "X_psmnet")])
    summary = write_summary(tmp_path / "Y_psmnet_fold1", 1, {"liver": 0.8}, training=training_config()) / "summary.json"
    write_json({**read_json(summary), "training_config": training_config(eval_fold=0)}, summary)
    with pytest.raises(SystemExit, match="trained on fold 0, but its run folder is fold 1"):
        summary_table([str(tmp_path / "Y_psmnet")])


PROTOCOL_OPTIONS = {"n_parts": 3, "z_margin": 0, "support_choice": "next", "n_support_slices": 1,
                    "data_sha256": "a" * 64}


@pytest.mark.parametrize("changes,key", [(dict(n_parts=1, z_margin=3), "n_parts"), (dict(z_margin=3), "z_margin"),
                                         (dict(data_sha256="b" * 64), "data_sha256")])
def test_a_row_mixing_evaluation_options_or_data_is_refused_naming_the_key(tmp_path, changes, key):
    write_summary(tmp_path / "X_psmnet_fold0", 0, {"liver": 0.8}, training=training_config(), options=PROTOCOL_OPTIONS)
    write_summary(tmp_path / "X_psmnet_fold1", 1, {"liver": 0.6}, training=training_config(),
                  options={**PROTOCOL_OPTIONS, **changes})
    with pytest.raises(SystemExit, match=rf"evaluated with different {key} \("):
        summary_table([str(tmp_path / "X_psmnet")])


def test_a_fold_evaluated_before_postprocessing_was_recorded_joins_a_row_without_it_but_not_one_with_it(tmp_path):
    for name, postprocessing in (("X_mean_teacher", "none"), ("Y_mean_teacher", "largest_component")):
        write_summary(tmp_path / f"{name}_fold0", 0, {"liver": 0.8}, training=training_config(),
                      options=PROTOCOL_OPTIONS)
        write_summary(tmp_path / f"{name}_fold1", 1, {"liver": 0.6}, training=training_config(),
                      options={**PROTOCOL_OPTIONS, "postprocessing": postprocessing})
    assert summary_table([str(tmp_path / "X_mean_teacher")]).splitlines()[2].startswith("| X_mean_teacher | 2 | 70.00")
    with pytest.raises(SystemExit, match=r"evaluated with different postprocessing \('none' vs 'largest_component'"):
        summary_table([str(tmp_path / "Y_mean_teacher")])


def test_a_row_with_a_summary_written_before_evaluation_options_is_tabulated_with_a_warning(tmp_path, caplog):
    write_summary(tmp_path / "X_psmnet_fold0", 0, {"liver": 0.8}, training=training_config(), options=PROTOCOL_OPTIONS)
    write_summary(tmp_path / "X_psmnet_fold1", 1, {"liver": 0.6}, training=training_config())
    with caplog.at_level(logging.WARNING, logger="experiment.provenance"):
        assert summary_table([str(tmp_path / "X_psmnet")]).splitlines()[2].startswith("| X_psmnet | 2 |")
    assert "X_psmnet_fold1/evaluation_fold1/summary.json: written before evaluations recorded their evaluation " \
           "options" in caplog.text


def test_setting2_groups_of_one_row_may_differ_in_label_group_only(tmp_path):
    for fold in (0, 1):
        write_summary(tmp_path / f"X_group0_psmnet_fold{fold}", fold, {"liver": 0.8},
                      training=training_config(setting=2, label_group=0))
        write_summary(tmp_path / f"X_group1_psmnet_fold{fold}", fold, {"right_kidney": 0.6},
                      training=training_config(setting=2, label_group=1))
    row = f"{tmp_path}/X_group0_psmnet+{tmp_path}/X_group1_psmnet"
    assert summary_table([row]).splitlines()[2].endswith("| 2 | 80.00 ± 0.00 | 60.00 ± 0.00 | 70.00 ± 0.00 |")
    write_summary(tmp_path / "Z_psmnet_fold0", 0, {"liver": 0.8}, training=training_config(setting=2, label_group=0))
    write_summary(tmp_path / "Z_psmnet_fold1", 1, {"liver": 0.8}, training=training_config(setting=2, label_group=1))
    with pytest.raises(SystemExit, match="trained with different label_group"):  # one prefix: one group
        summary_table([str(tmp_path / "Z_psmnet")])


def test_fold_tables_say_how_many_query_scans_were_skipped_for_an_absent_organ(tmp_path):
    for fold, skipped in ((0, 1), (1, 2)):
        summary = write_summary(tmp_path / f"X_psmnet_fold{fold}", fold, {"liver": 0.8}) / "summary.json"
        write_json({**read_json(summary), "n_skipped_scans": skipped}, summary)
    write_summary(tmp_path / "Y_psmnet_fold0", 0, {"liver": 0.8})
    output = summary_tables([str(tmp_path / "X_psmnet"), str(tmp_path / "Y_psmnet")], ("dice",))
    assert output.endswith("\n\nX_psmnet: 3 query scan(s) skipped for an organ absent from them "
                           "(docs/PROTOCOL.md, \"Organs absent from a query scan\")")


def test_comparison_puts_evaluations_side_by_side(tmp_path):
    before = write_summary(tmp_path / "run", 0, {"liver": 0.1, "spleen": 0.3}, step=0)
    after = write_summary(tmp_path / "run2", 0, {"liver": 0.9, "spleen": 0.7}, step=50)
    lines = comparison_table([before, after]).splitlines()
    assert lines[2] == "| liver | 10.00 | 90.00 |"
    assert lines[-1] == "| **mean Dice** | **20.00** | **80.00** |"


def write_curve(run_dir: Path, validation: dict[int, dict[str, float]], losses: dict[int, float]) -> None:
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        for step, loss in losses.items():
            writer.add_scalar("loss/total", loss, step)
        for step, organs in validation.items():
            for organ, dice in organs.items():
                writer.add_scalar(f"validation_dice/{organ}", dice, step)


def test_curve_tables_average_organs_then_folds_and_loss_windows(tmp_path):
    write_curve(tmp_path / "X_psmnet_fold0", {10: {"liver": 0.2, "spleen": 0.4}, 20: {"liver": 0.6, "spleen": 0.8}},
                {5: 1.0, 10: 0.5, 15: 0.25, 20: 0.25})
    write_curve(tmp_path / "X_psmnet_fold1", {10: {"liver": 0.5, "spleen": 0.5}, 20: {"liver": 0.9, "spleen": 0.9}},
                {5: 0.5, 10: 0.5, 15: 0.5, 20: 0.5})
    write_curve(tmp_path / "X_psmnet_fold1_copy", {10: {"liver": 0.0}}, {5: 9.0})  # not a fold of X_psmnet
    dice_table, loss_table = curve_tables([str(tmp_path / "X_psmnet")]).split("Training loss")
    assert "| step 10 | step 20 |" in dice_table
    # fold means 30/50 at step 10 and 70/90 at step 20 (organs first, then folds)
    assert "| X_psmnet | 2 | 40.00 ± 10.00 | 80.00 ± 10.00 |" in dice_table
    # loss windows (0, 10] and (10, 20]: fold 0 0.75 and 0.25, fold 1 0.5 and 0.5
    assert "| X_psmnet | 2 | 0.625 ± 0.125 | 0.375 ± 0.125 |" in loss_table


def test_curves_of_a_semi_supervised_run_leave_out_its_best_so_far(tmp_path):
    # train.py logs validation_dice/best_mean beside the classes: 0.6 is the best of step 10, kept at step 20
    write_curve(tmp_path / "ACDC_mean_teacher_labelled3_fold0",
                {10: {"RV": 0.3, "Myo": 0.6, "LV": 0.9, "best_mean": 0.6},
                 20: {"RV": 0.1, "Myo": 0.2, "LV": 0.3, "best_mean": 0.6}}, {10: 1.0, 20: 0.5})
    dice_table = curve_tables([str(tmp_path / "ACDC_mean_teacher_labelled3")]).split("Training loss")[0]
    assert "| ACDC_mean_teacher_labelled3 | 1 | 60.00 ± 0.00 | 20.00 ± 0.00 |" in dice_table


def test_setting2_curves_pool_organ_groups_only_over_steps_every_group_logged(tmp_path):
    write_curve(tmp_path / "X_group0_psmnet_fold0", {10: {"liver": 0.2, "spleen": 0.4}, 20: {"liver": 0.6, "spleen": 0.8}},
                {10: 1.0, 20: 0.5})
    write_curve(tmp_path / "X_group1_psmnet_fold0", {10: {"right_kidney": 0.8, "left_kidney": 0.6}}, {10: 0.0})  # still training
    write_curve(tmp_path / "X_group0_psmnet_fold1", {10: {"liver": 0.9, "spleen": 0.9}}, {10: 0.0})  # group 1 not started
    row = f"{tmp_path / 'X_group0_psmnet'}+{tmp_path / 'X_group1_psmnet'}"
    dice_table, loss_table = curve_tables([row]).split("Training loss")
    # one fold, one step: the mean of the four organs at step 10; no step-20 point of liver and spleen alone
    dice_row, loss_row = ([line for line in table.splitlines() if line.startswith("| X_group0")][0]
                          for table in (dice_table, loss_table))
    assert dice_row.endswith("| 1 | 50.00 ± 0.00 |")
    assert "step 20" not in dice_table
    assert loss_row.endswith("| 1 | 0.500 ± 0.000 |")


def test_folds_option_restricts_fold_tables_and_curves_to_those_folds(tmp_path):
    for fold, dice in ((0, 0.2), (1, 0.4), (2, 0.9)):
        write_summary(tmp_path / f"X_psmnet_fold{fold}", fold, {"liver": dice})
        write_curve(tmp_path / f"X_psmnet_fold{fold}", {10: {"liver": dice}}, {10: 1.0})
    table = summary_tables([str(tmp_path / "X_psmnet")], ("dice",), folds=[0, 1]).split("\n\n")
    assert table[1].splitlines()[2] == "| X_psmnet | 2 | 30.00 ± 10.00 | 30.00 ± 10.00 |"
    assert table[3].splitlines()[0] == "| method | fold 0 | fold 1 |"
    dice_table = curve_tables([str(tmp_path / "X_psmnet")], folds=[1, 2]).split("Training loss")[0]
    assert "| X_psmnet | 2 | 65.00 ± 25.00 |" in dice_table


def write_support_sizes(run_prefix: Path, dice: dict[int, dict[int, dict[str, float]]]) -> None:
    """dice: {fold: {N: {organ: Dice}}}, each written as test.py's evaluation with N support slices."""
    for fold, per_size in dice.items():
        for size, organ_dice in per_size.items():
            write_summary(Path(f"{run_prefix}_fold{fold}"), fold, organ_dice,
                          folder_suffix="" if size == 1 else f"_support{size}")


def test_support_size_table_compares_every_n_on_the_folds_evaluated_at_all_of_them(tmp_path):
    write_support_sizes(tmp_path / "X_psmnet", {
        0: {1: {"liver": 0.4, "spleen": 0.2}, 2: {"liver": 0.5, "spleen": 0.3}, 8: {"liver": 0.8, "spleen": 0.4}},
        1: {1: {"liver": 0.6, "spleen": 0.6}, 2: {"liver": 0.6, "spleen": 0.6}, 8: {"liver": 0.7, "spleen": 0.7}},
        2: {1: {"liver": 0.9, "spleen": 0.9}, 2: {"liver": 0.9, "spleen": 0.9}}})  # fold 2 not evaluated with N = 8
    sections = support_size_tables([str(tmp_path / "X_psmnet")], (1, 2, 8)).split("\n\n")
    # folds 0 and 1: organs' means 30 / 60 (N = 1), 40 / 60 (N = 2), 60 / 70 (N = 8); gains 30 and 10
    assert sections[1].splitlines() == [
        "| method | folds | N = 1 | N = 2 | N = 8 | N = 8 minus N = 1 |", "|---|---|---|---|---|---|",
        "| X_psmnet | 2 | 45.00 ± 15.00 | 50.00 ± 10.00 | 65.00 ± 5.00 | 20.00 ± 10.00 |"]
    assert sections[3].splitlines()[2:] == [
        "| X_psmnet, N = 1 | 2 | 50.00 ± 10.00 | 40.00 ± 20.00 | 45.00 ± 15.00 |",
        "| X_psmnet, N = 2 | 2 | 55.00 ± 5.00 | 45.00 ± 15.00 | 50.00 ± 10.00 |",
        "| X_psmnet, N = 8 | 2 | 75.00 ± 5.00 | 55.00 ± 15.00 | 65.00 ± 5.00 |"]
    assert sections[5].splitlines() == ["| method | fold 0 | fold 1 |", "|---|---|---|", "| X_psmnet, N = 1 | 30.00 | 60.00 |",
                                        "| X_psmnet, N = 2 | 40.00 | 60.00 |", "| X_psmnet, N = 8 | 60.00 | 70.00 |"]
    assert sections[6:] == ["X_psmnet: fold 2 left out of the support sizes, not evaluated with N = 8"]


def test_support_sizes_without_a_shared_fold_or_evaluation_are_clear_errors(tmp_path):
    write_support_sizes(tmp_path / "X_psmnet", {0: {1: {"liver": 0.4}}, 1: {4: {"liver": 0.5}}})
    with pytest.raises(SystemExit, match=r"no fold is evaluated with every support size \[1, 4\] "
                                         r"\(folds per size: N=1: \[0\], N=4: \[1\]\)"):
        support_size_tables([str(tmp_path / "X_psmnet")], (1, 4))
    with pytest.raises(SystemExit, match="expected <prefix>_fold<k>/evaluation_fold<k>_support8/summary.json"):
        support_size_tables([str(tmp_path / "X_psmnet")], (1, 8))


def test_support_size_figure_plots_the_tabulated_fold_means(tmp_path, monkeypatch):
    write_support_sizes(tmp_path / "X_psmnet", {0: {1: {"liver": 0.4, "spleen": 0.2}, 4: {"liver": 0.5, "spleen": 0.5}},
                                                1: {1: {"liver": 0.6, "spleen": 0.6}, 4: {"liver": 0.9, "spleen": 0.7}}})
    plotted = {}
    monkeypatch.setattr(make_figures, "plot_support_sizes", lambda dice, out: plotted.update(dice) or out)
    make_figures.support_sizes([str(tmp_path / "X_psmnet")], tmp_path / "n.png", labels=["PSMnet"], sizes=(4, 1))
    assert plotted == {"PSMnet": {1: [pytest.approx(0.3), pytest.approx(0.6)], 4: [pytest.approx(0.5), pytest.approx(0.8)]}}


def test_paired_comparison_subtracts_fold_by_fold_and_counts_wins_in_each_metrics_direction(tmp_path):
    for fold, (a_dice, b_dice, a_hd95, b_hd95) in enumerate([(0.6, 0.5, 10.0, 30.0), (0.4, 0.5, 40.0, 20.0),
                                                              (0.9, 0.6, 15.0, 25.0)]):
        write_summary(tmp_path / f"A_psmnet_fold{fold}", fold, {"liver": a_dice, "spleen": a_dice},
                      organ_hd95={"liver": (a_hd95, 0), "spleen": (a_hd95, 0)})
        write_summary(tmp_path / f"B_alpnet_fold{fold}", fold, {"liver": b_dice, "spleen": b_dice},
                      organ_hd95={"liver": (b_hd95, 0), "spleen": (b_hd95, 0)})
    write_summary(tmp_path / "A_psmnet_fold3", 3, {"liver": 0.0, "spleen": 0.0},
                  organ_hd95={"liver": (99.0, 0), "spleen": (99.0, 0)})  # B has no fold 3: not compared
    sections = comparison_tables([(str(tmp_path / "A_psmnet"), str(tmp_path / "B_alpnet"))], ("dice", "hd95")).split("\n\n")
    assert sections[0] == "dice (%), organs' mean: A minus B per fold"
    # Dice differences +10, -10, +30 points: mean 10, population std 16.33; A higher on folds 0 and 2
    assert sections[1].splitlines() == [
        "| A minus B | fold 0 | fold 1 | fold 2 | mean ± std | folds A better |", "|---|---|---|---|---|---|",
        "| A_psmnet minus B_alpnet | 10.00 | -10.00 | 30.00 | 10.00 ± 16.33 | 2 of 3 |"]
    # HD95 differences -20, +20, -10 mm: lower is better, so A is better on folds 0 and 2
    assert sections[3].splitlines()[2] == "| A_psmnet minus B_alpnet | -20.00 | 20.00 | -10.00 | -3.33 ± 17.00 | 2 of 3 |"
    assert sections[4] == "A_psmnet minus B_alpnet: fold(s) 3 left out, evaluated for one row only"
