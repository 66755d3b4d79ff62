"""Protocol evaluation of a trained checkpoint: every registered metric per organ and query scan.

    python test.py with demo cpu                    # the checkpoint of the matching train.py run
    python test.py with chaost2 checkpoint=runs/.../checkpoints/last.pth save_predictions=True

The model is rebuilt from the config stored in the checkpoint, and evaluated on the dataset, fold,
setting and label group it was trained with: a request that contradicts them is refused, unless
`allow_config_mismatch=True` (experiment/provenance.py). The fold's test episodes follow
docs/PROTOCOL.md, "Test-time episodes" (1 support scan, npart = 3 chunks, ground-truth z-range;
a query scan without an organ is skipped for it and reported); scores (Dice, precision, recall,
HD95, ASSD: evaluation/metrics.py) are 3D per scan, then averaged per organ (docs/PROTOCOL.md,
"Metric"). Results go to the evaluation folder of the checkpoint's own run (experiment/layout.py):
summary.json (with the checkpoint's path, SHA-256, step and training config, the evaluation options
and the evaluated data's fingerprint), scores.csv, table.md (evaluation/reports.py), and optional
NIfTI predictions and PNG overlays; options away from the protocol's (e.g. n_parts=1 z_margin=3, or
data other than the checkpoint was trained on) write to a folder of their own, e.g.
evaluation_fold0_nparts1_zmargin3/.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from config import ex
from evaluation.reports import (DISTANCE_UNIT_KEY, OVERLAYS_FOLDER, PREDICTIONS_FOLDER, SUMMARY_NAME, begin_evaluation,
                                format_score_table,
                                skipped_scans_note, summarize, write_evaluation)
from dataloaders.acdc import ACDC_NAME
from dataloaders.image_datasets import is_image_dataset
from evaluation.scoring import evaluate_episodes
from evaluation.volume_scoring import classes_absent, empty_prediction_counts, evaluate_volumes
from experiment.assembly import absent_test_organs, fold_data, load_trained_model, test_episodes
from experiment.config_checks import check_evaluation_config
from experiment.layout import BEST_CHECKPOINT_NAME, RunLayout
from experiment.data_identity import data_fingerprint
from experiment.provenance import (bind_to_checkpoint, evaluation_options, evaluation_provenance, evaluation_run,
                                   protocol_departures)
from experiment.semi_supervised_assembly import labelled_count, semi_supervised_data
from models import SEMI_SUPERVISED
from utils.checkpoint import CheckpointError
from utils.io import write_image, write_png
from utils.run_lock import RunLock
from utils.runtime import check_precision, select_device
from utils.tensorboard_panels import test_episode_panel

logger = logging.getLogger(__name__)

MODEL_KEYS = ("model", "model_options")  # what must agree between the checkpoint and the request
RGB_MAX = 255


@ex.main
def test(_config, _run, model_options):  # model_options captured so `model_options.x=...` may add keys
    requested = dict(_config)
    check_evaluation_config(requested)
    semi_supervised = requested["track"] == SEMI_SUPERVISED
    requested_run = RunLayout.of(requested)  # semi-supervised: the best validation's weights, as SSL4MIS tests
    default_checkpoint = requested_run.best_checkpoint if semi_supervised else requested_run.last_checkpoint
    checkpoint_path = Path(requested["checkpoint"] or default_checkpoint)
    run = evaluation_run(checkpoint_path, requested)  # the checkpoint's own run, never another's
    device = select_device(requested["device"])
    precision = check_precision(requested["precision"])

    # --- the model, as it was trained, and the dataset, fold, setting and label group it was trained for ---
    trained = load_trained_model(checkpoint_path, device)
    check_same_model(trained.config, requested, checkpoint_path)
    config, mismatches = bind_to_checkpoint(trained.config, requested, _run.config_modifications.modified,
                                            checkpoint_path)
    # --- what changes the scores (options, the data): recorded; away from the protocol, its own folder ---
    fingerprint = data_fingerprint(config)
    options = evaluation_options(config, fingerprint)
    departures = protocol_departures(options, trained.config, trained.data_fingerprint)
    if semi_supervised:
        return test_semi_supervised(trained, config, mismatches, run, device, precision, _run, options, fingerprint,
                                    departures)

    # --- the fold's test episodes, at the resolution the model was trained at ----------------------
    data = fold_data({**config, "image_size": trained.config["image_size"]})
    episodes = test_episodes(config, data)
    skipped = absent_test_organs(config, data)

    # --- segment and score --------------------------------------------------------------------------
    evaluation = evaluate_episodes(trained.model, episodes, device, precision, config["eval_batch_size"],
                                   config["metrics"], progress=lambda items: tqdm(items, desc="test episodes"))
    # the provenance carries the digest of exactly the bytes the model was loaded from
    summary = summarize(evaluation, evaluation_provenance(checkpoint_path, trained.step, trained.config, config,
                                                          mismatches, checkpoint_sha256=trained.checkpoint_sha256,
                                                          options=options, data=fingerprint),
                        skipped)
    title = (f"{data.spec.name} fold {config['eval_fold']}, setting {config['setting']}, {summary['model_label']} "
             f"at step {trained.step}, {config['n_support_slices']} support slice(s) per scan and chunk")
    print("\n" + "\n".join(filter(None, [title, format_score_table(evaluation), skipped_scans_note(summary)])) + "\n")

    # --- write results: one writer, one evaluation per folder, summary.json last (evaluation/reports.py) ----
    output_dir = run.evaluation(config["eval_fold"], checkpoint_path, config["n_support_slices"], departures=departures)
    with RunLock(output_dir, "test.py"):
        begin_evaluation(output_dir)
        outputs = []
        if config["save_predictions"]:
            outputs += save_prediction_volumes(episodes, evaluation.predictions, data.load(data.split.query_ids),
                                               output_dir / PREDICTIONS_FOLDER)
        if config["save_overlays"]:
            outputs += save_overlays(episodes, evaluation.predictions, output_dir / OVERLAYS_FOLDER)
        write_evaluation(evaluation, summary, output_dir, outputs)
    _run.info["summary"] = str(output_dir / SUMMARY_NAME)
    logger.info("wrote %s", output_dir)
    return summary["mean_dice"]


def test_semi_supervised(trained, config: dict, mismatches: dict, run: RunLayout, device, precision: str, _run,
                         options: dict, fingerprint: dict, departures: dict) -> float:
    """The semi-supervised track's evaluation: every test volume slice by slice at the patch size the
    model was trained with, every class scored (evaluation/volume_scoring.py), written as the
    few-shot evaluations are (options, data fingerprint, departures: as `test` gives them)."""
    data = semi_supervised_data(config)
    volumes = data.evaluation_volumes(data.test_ids)
    evaluation = evaluate_volumes(trained.model, volumes, data.classes, trained.config["image_size"], device,
                                  precision, config["eval_batch_size"], config["metrics"], config["metric_rules"],
                                  config["scored_slices"], progress=lambda items: tqdm(items, desc="test volumes"),
                                  postprocessing=config["postprocessing"])
    skipped = classes_absent(volumes, data.classes) if config["scored_slices"] == "organ_extent" else None
    provenance = evaluation_provenance(trained.checkpoint, trained.step, trained.config, config, mismatches,
                                       checkpoint_sha256=trained.checkpoint_sha256, options=options,
                                       data=fingerprint)
    summary = {**summarize(evaluation, provenance, skipped), "metric_rules": config["metric_rules"],
               "scored_slices": config["scored_slices"], "postprocessing": config["postprocessing"],
               DISTANCE_UNIT_KEY: volumes[0].distance_unit, "empty_predictions": empty_prediction_counts(evaluation),
               "labelled": labelled_count(trained.config)}
    split = "" if data.name == ACDC_NAME else f"fold {config['eval_fold']} "
    unit = "patients" if data.name == ACDC_NAME else "share of the images" if is_image_dataset(data.name) else "scans"
    title = (f"{data.name} {split}test set ({len(volumes)} volumes), {summary['model_label']} with "
             f"{summary['labelled']} labelled {unit}, step {trained.step}; distances in "
             f"{summary[DISTANCE_UNIT_KEY]}, empty predictions scored by the {config['metric_rules']} rules, "
             f"scored on the {config['scored_slices'].replace('_', ' ')}, post-processing {config['postprocessing']}")
    table = format_score_table(evaluation, per_scan=False, distance_unit=summary[DISTANCE_UNIT_KEY])
    print("\n" + "\n".join(filter(None, [title, table, skipped_scans_note(summary)])) + "\n")
    output_dir = run.evaluation(config["eval_fold"], trained.checkpoint, protocol_checkpoint=BEST_CHECKPOINT_NAME,
                                departures=departures)
    with RunLock(output_dir, "test.py"):
        begin_evaluation(output_dir)
        outputs = (save_label_maps(volumes, evaluation, data.classes, output_dir / PREDICTIONS_FOLDER)
                   if config["save_predictions"] else [])
        write_evaluation(evaluation, summary, output_dir, outputs)
    _run.info["summary"] = str(output_dir / SUMMARY_NAME)
    logger.info("wrote %s", output_dir)
    return summary["mean_dice"]


def save_label_maps(volumes, evaluation, classes: dict[int, str], folder: Path) -> list[Path]:
    """One label-map NIfTI per test volume (the scan's geometry where known, else the voxel grid); their paths."""
    paths = []
    for volume in volumes:
        label_map = np.zeros(volume.label.shape, dtype=np.uint8)
        for label in classes:
            label_map[evaluation.predictions[(label, volume.case_id)].numpy()] = label
        image = sitk.GetImageFromArray(label_map)
        if volume.scan is not None:
            image.SetSpacing(volume.scan.spacing)
            image.SetOrigin(volume.scan.origin)
            image.SetDirection(volume.scan.direction)
        paths.append(folder / f"prediction_{volume.case_id}.nii.gz")
        write_image(image, paths[-1])
    return paths


def check_same_model(trained: dict, requested: dict, path: Path) -> None:
    """The requested model must be the one in the checkpoint (or the request must name none)."""
    differences = [f"{key}: trained {trained[key]!r}, requested {requested[key]!r}"
                   for key in MODEL_KEYS if trained[key] != requested[key]]
    if differences and requested["checkpoint"] is None:
        raise CheckpointError(f"{path}: checkpoint does not match the requested model ({'; '.join(differences)})")
    if differences:
        logger.warning("%s: using the checkpoint's model (%s)", path, "; ".join(differences))


def save_prediction_volumes(episodes, predictions, scans, folder: Path) -> list[Path]:
    """One binary NIfTI per organ and query scan, in the geometry of the scan's files; their paths."""
    written = []
    for episode in episodes:
        scan = scans[episode.query_scan_id]
        volume = np.zeros(tuple(episode.volume_shape), dtype=np.uint8)
        volume[episode.z_indices.numpy()] = predictions[(episode.label, episode.query_scan_id)].numpy()
        image = sitk.GetImageFromArray(volume)
        image.SetSpacing(scan.spacing)
        image.SetOrigin(scan.origin)
        image.SetDirection(scan.direction)
        written.append(folder / f"prediction_{episode.organ}_scan{episode.query_scan_id}.nii.gz")
        write_image(image, written[-1])
    return written


def save_overlays(episodes, predictions, folder: Path) -> list[Path]:
    """PNG of the middle evaluated slice: support | query | prediction | ground truth; their paths."""
    written = []
    for episode in episodes:
        panel = test_episode_panel(episode, predictions[(episode.label, episode.query_scan_id)])
        rgb = (panel.permute(1, 2, 0).numpy() * RGB_MAX).round().astype(np.uint8)
        path = folder / f"overlay_{episode.organ}_scan{episode.query_scan_id}.png"
        write_png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), path)
        written.append(path)
    return written


if __name__ == "__main__":
    ex.run_commandline()
