"""Protocol evaluation of a trained checkpoint: Dice, precision and recall per organ and scan.

    python test.py with demo cpu                    # the checkpoint of the matching train.py run
    python test.py with chaost2 checkpoint=runs/.../checkpoints/last.pth save_predictions=True

The model is rebuilt from the config stored in the checkpoint. The fold's test episodes follow
PROTOCOL.md "Test-time episodes" (1 support scan, npart = 3 chunks, ground-truth z-range); scores
are 3D per scan, then averaged per organ (PROTOCOL.md "Metric"). Results go to
runs/<run_name>/evaluation_fold<k>/: summary.json, scores.csv, and optional NIfTI predictions and
PNG overlays.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from config import ex, run_directory
from dataloaders.experiment_data import dataset_directories, test_episodes, tested_labels
from dataloaders.folds import fold_split
from dataloaders.specs import get_spec
from dataloaders.volumes import load_scans
from models import build_model
from utils.checkpoint import LAST_CHECKPOINT, CheckpointError, load_checkpoint, load_model_weights
from utils.evaluation import evaluate_episodes, format_score_table, organ_means
from utils.io import atomic_path, write_image, write_json
from utils.metrics import mean_and_std
from utils.runtime import check_precision, select_device
from utils.tensorboard_panels import test_episode_panel

logger = logging.getLogger(__name__)

MODEL_KEYS = ("model", "model_options")  # what must agree between the checkpoint and the request
RGB_MAX = 255


@ex.main
def test(_config, _run, model_options):  # model_options captured so `model_options.x=...` may add keys
    config = dict(_config)
    run_dir = run_directory(config)
    checkpoint_path = Path(config["checkpoint"] or run_dir / LAST_CHECKPOINT)
    device = select_device(config["device"])
    precision = check_precision(config["precision"])

    # --- the model, as it was trained ------------------------------------------------------------
    state = load_checkpoint(checkpoint_path, map_location=device)
    trained = state["config"]
    check_same_model(trained, config, checkpoint_path)
    model = build_model(**trained["model"], **trained["model_options"]).to(device)
    load_model_weights(model, state["model"], checkpoint_path)

    # --- the fold's test episodes -------------------------------------------------------------------
    spec = get_spec(config["dataset"])
    dataset_dir, derived_dir = dataset_directories(config["data_root"], config["derived_root"], spec)
    split = fold_split(spec, config["eval_fold"], config["n_shots"], config["support_choice"])
    scans = load_scans(dataset_dir, spec, split.query_ids + split.support_ids, derived_dir=derived_dir,
                       image_size=trained["image_size"])
    labels = tested_labels(spec, config["setting"], config["label_group"])
    episodes = test_episodes(scans, split, spec, labels, config["n_parts"])

    # --- segment and score --------------------------------------------------------------------------
    scores, predictions = evaluate_episodes(model, episodes, device, precision, config["eval_batch_size"],
                                            progress=lambda items: tqdm(items, desc="test episodes"))
    table = format_score_table(scores)
    print(f"\n{spec.name} fold {config['eval_fold']}, setting {config['setting']}, "
          f"{trained.get('model_label') or trained['model']['name']} at step {state['step']} (Dice %)\n{table}\n")

    # --- write results ------------------------------------------------------------------------------
    output_dir = run_dir / evaluation_folder_name(config["eval_fold"], checkpoint_path)
    summary = summarize(scores, config, checkpoint_path, state["step"])
    write_json(summary, output_dir / "summary.json")
    write_scores_csv(scores, output_dir / "scores.csv")
    (output_dir / "table.md").write_text(table + "\n")
    if config["save_predictions"]:
        save_prediction_volumes(episodes, predictions, scans, output_dir / "predictions")
    if config["save_overlays"]:
        save_overlays(episodes, predictions, output_dir / "overlays")
    _run.info["summary"] = str(output_dir / "summary.json")
    logger.info("wrote %s", output_dir)
    return summary["mean_dice"]


def evaluation_folder_name(fold: int, checkpoint_path: Path) -> str:
    """evaluation_fold<k> for the final weights, evaluation_fold<k>_<checkpoint> for any other checkpoint."""
    suffix = "" if checkpoint_path.name == Path(LAST_CHECKPOINT).name else f"_{checkpoint_path.stem}"
    return f"evaluation_fold{fold}{suffix}"


def check_same_model(trained: dict, requested: dict, path: Path) -> None:
    """The requested model must be the one in the checkpoint (or the request must name none)."""
    differences = [f"{key}: trained {trained[key]!r}, requested {requested[key]!r}"
                   for key in MODEL_KEYS if trained[key] != requested[key]]
    if differences and requested["checkpoint"] is None:
        raise CheckpointError(f"{path}: checkpoint does not match the requested model ({'; '.join(differences)})")
    if differences:
        logger.warning("%s: using the checkpoint's model (%s)", path, "; ".join(differences))


def summarize(scores, config: dict, checkpoint_path: Path, step: int) -> dict:
    """JSON summary: per organ mean metrics and per-scan counts."""
    organs = {}
    for organ in dict.fromkeys(score.organ for score in scores):
        organ_scores = [score for score in scores if score.organ == organ]
        organs[organ] = {
            "label": organ_scores[0].label,
            **{metric: mean_and_std([getattr(s.counts, metric) for s in organ_scores])[0]
               for metric in ("dice", "precision", "recall")},
            "scans": {str(s.scan_id): {"dice": s.counts.dice, "precision": s.counts.precision,
                                        "recall": s.counts.recall, "true_positives": s.counts.true_positives,
                                        "false_positives": s.counts.false_positives,
                                        "false_negatives": s.counts.false_negatives} for s in organ_scores},
        }
    return {
        "dataset": config["dataset"], "eval_fold": config["eval_fold"], "setting": config["setting"],
        "label_group": config["label_group"], "checkpoint": str(checkpoint_path), "step": step,
        "organs": organs, "mean_dice": mean_and_std(list(organ_means(scores).values()))[0],
    }


def write_scores_csv(scores, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp_path, tmp_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["organ", "label", "scan_id", "dice", "precision", "recall",
                         "true_positives", "false_positives", "false_negatives"])
        for s in scores:
            writer.writerow([s.organ, s.label, s.scan_id, s.counts.dice, s.counts.precision, s.counts.recall,
                             s.counts.true_positives, s.counts.false_positives, s.counts.false_negatives])


def save_prediction_volumes(episodes, predictions, scans, folder: Path) -> None:
    """One binary NIfTI per organ and query scan, in the geometry of the scan's files."""
    for episode in episodes:
        scan = scans[episode.query_scan_id]
        volume = np.zeros(tuple(episode.volume_shape), dtype=np.uint8)
        volume[episode.z_indices.numpy()] = predictions[(episode.label, episode.query_scan_id)].numpy()
        image = sitk.GetImageFromArray(volume)
        image.SetSpacing(scan.spacing)
        image.SetOrigin(scan.origin)
        image.SetDirection(scan.direction)
        write_image(image, folder / f"prediction_{episode.organ}_scan{episode.query_scan_id}.nii.gz")


def save_overlays(episodes, predictions, folder: Path) -> None:
    """PNG of the middle evaluated slice: support | query | prediction | ground truth."""
    for episode in episodes:
        panel = test_episode_panel(episode, predictions[(episode.label, episode.query_scan_id)])
        rgb = (panel.permute(1, 2, 0).numpy() * RGB_MAX).round().astype(np.uint8)
        path = folder / f"overlay_{episode.organ}_scan{episode.query_scan_id}.png"
        with atomic_path(path, suffix=".png") as tmp_path:
            cv2.imwrite(str(tmp_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    ex.run_commandline()
