"""Evaluation time of SSL-ALPNet on CHAOST2: this project's test.py evaluation against the
original's validation loop (validation.py: batch 1, slice by slice), same weights, same episodes.

    git clone https://github.com/cheng-01037/Self-supervised-Fewshot-Medical-Image-Segmentation /tmp/orig_alpnet
    python bench/bench_original_evaluation.py --original /tmp/orig_alpnet                 # the whole fold 0
    python bench/bench_original_evaluation.py --original /tmp/orig_alpnet --organs 1 --query-scans 2

Both sides evaluate SSL-ALPNet with one set of randomly initialised weights (the paper's encoder:
DeepLabv3 ResNet-101 trunk at output stride 8 and the 1x1 projection to 256 channels, seed 1234;
speed does not depend on the weights, and equal Dice on both sides shows that the weights and the
episodes are the same) on the CHAOST2 scans in this project's layout, in fp32 on the CPU with the
same number of torch threads:

- this project: `test_episodes` + `evaluate_episodes` as test.py runs them (eval_batch_size query
  slices per forward pass, each part's support encoded once per batch), scored with Dice,
  precision and recall (the original's metrics; test.py adds the surface distances);
- the original: its own classes (FewShotSeg, med_fewshot_val, Metric) imported from the folder
  given, in a separate process (its packages `models` and `dataloaders` have the names of this
  project's), driven by a loop that follows validation.py's procedure: for each organ, the
  support of each part from `get_support`, then every slice of every query scan through a batch-1
  DataLoader, one forward pass of support + query per slice, the slices inside the organ's
  z-range scored. Nothing of the original is copied here. A CPU shim makes it run: Tensor.cuda()
  returns the tensor, torchvision's deeplabv3_resnet101 is built without weights (no download),
  collections.Sequence is restored for its image_transforms, a stub stands in for nibabel (unused
  on this path), its util/ folder goes on sys.path (util/__init__.py imports `utils`), and a temporary folder links the scans and writes the class-slice index
  (classmap_1.json) its dataset reads.

Timed on each side: building the fold's episodes from the files, and segmenting and scoring.
The original's loop also writes each predicted volume as NIfTI; that is left out here (test.py
writes none by default). `--organs` / `--query-scans` time a subset of the fold (the original
still reads all of its scans and walks through the slices of the others without segmenting them).
"""
from __future__ import annotations

import argparse
import collections.abc
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DATASET = "CHAOST2"
FOLD = 0
SEED = 1234
EVALUATION_METRICS = ("dice", "precision", "recall")  # what the original's Metric computes
# the original's configuration (config_ssl_upload.py): ResNet-101 FCN trunk, 4 x 4 training windows
# on the 32 x 32 feature grid, 2 x 2 windows at evaluation, 3 support parts, support = the last
# scan of the fold's block
ORIGINAL_MODEL_CONFIG = {"which_model": "dlfcn_res101", "use_coco_init": False, "proto_grid_size": 8,
                         "feature_hw": [32, 32], "cls_name": "grid_proto", "align": True}
ORIGINAL_VALIDATION_WINDOW = 2
ORIGINAL_SUPPORT_SCAN_INDEX = -1
ORIGINAL_LABEL_NAMES = ("BG", "LIVER", "RK", "LK", "SPLEEN")
ORIGINAL_SLICE_SIZE = 256
N_PARTS = 3
# this project's encoder trunk (an nn.Sequential) -> the torchvision ResNet names the original uses
TRUNK_INDEX_TO_NAME = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def project_config(data_root: Path) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    from config import composed_config

    return composed_config(["chaost2", "alpnet"], {"data_root": str(data_root), "eval_fold": FOLD, "device": "cpu",
                                                   "model": {"pretrained": None}})


def original_state_dict(project_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's ALPNet weights under the original FewShotSeg's names."""
    renamed = {}
    for key, value in project_state.items():
        if key.startswith("encoder.trunk."):
            index, rest = key.removeprefix("encoder.trunk.").split(".", 1)
            renamed[f"encoder.backbone.{TRUNK_INDEX_TO_NAME[index]}.{rest}"] = value
        elif key == "encoder.projection.weight":
            renamed["encoder.localconv.weight"] = value
        else:
            raise KeyError(f"no counterpart in the original for {key}")
    return renamed


# --- this project ------------------------------------------------------------------------------


def time_project(config: dict, weights: dict[str, torch.Tensor], organs, query_scans) -> dict:
    from evaluation.scoring import evaluate_episodes
    from experiment.assembly import build_model_from_config, fold_data, test_episodes

    model = build_model_from_config(config)
    model.load_state_dict(weights)
    started = time.perf_counter()
    episodes = [episode for episode in test_episodes(config, fold_data(config))
                if (not organs or episode.label in organs) and (not query_scans or episode.query_scan_id in query_scans)]
    loaded = time.perf_counter()
    evaluation = evaluate_episodes(model, episodes, torch.device("cpu"), "fp32", config["eval_batch_size"],
                                   EVALUATION_METRICS)
    done = time.perf_counter()
    images = sum(len(episode.query_images) + N_PARTS * episode.support_images.shape[1] for episode in episodes)
    return {"load_s": loaded - started, "segment_and_score_s": done - loaded, "encoded_slices": images,
            "dice": {f"{score.label}/{score.scan_id}": score.values["dice"] for score in evaluation.scores}}


# --- the original, in its own process -------------------------------------------------------------


def install_cpu_shim() -> None:
    """What the original needs to run on a CPU with today's libraries (see the module docstring)."""
    import torchvision

    torch.Tensor.cuda = lambda tensor, *args, **kwargs: tensor
    torch.nn.Module.cuda = lambda module, *args, **kwargs: module
    build_deeplab = torchvision.models.segmentation.deeplabv3_resnet101
    torchvision.models.segmentation.deeplabv3_resnet101 = lambda *args, num_classes=21, **kwargs: build_deeplab(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=None)
    collections.Sequence = collections.abc.Sequence
    sys.modules.setdefault("nibabel", types.ModuleType("nibabel"))


def original_data_folder(dataset_dir: Path, folder: Path) -> Path:
    """The scans linked into `folder` with the class-slice index the original's dataset reads:
    {label name: {scan id: [slices showing it]}} (background: every slice)."""
    class_slices = {name: {} for name in ORIGINAL_LABEL_NAMES}
    for label_file in sorted(dataset_dir.glob("label_*.nii.gz")):
        scan_id = label_file.name.removeprefix("label_").removesuffix(".nii.gz")
        for prefix in ("image", "label"):
            (folder / f"{prefix}_{scan_id}.nii.gz").symlink_to(dataset_dir / f"{prefix}_{scan_id}.nii.gz")
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file))).round().astype(int)  # (Z, H, W)
        for value, name in enumerate(ORIGINAL_LABEL_NAMES):
            shown = np.ones(len(labels), bool) if value == 0 else (labels == value).any(axis=(1, 2))
            class_slices[name][scan_id] = np.flatnonzero(shown).tolist()
    (folder / "classmap_1.json").write_text(json.dumps(class_slices))
    return folder


def time_original(original: Path, dataset_dir: Path, weights_file: Path, organs, query_scans) -> dict:
    install_cpu_shim()
    sys.path[:0] = [str(original), str(original / "util")]  # its util/__init__.py imports `utils` as top level
    from dataloaders.dataset_utils import get_normalize_op
    from dataloaders.dev_customized_med import med_fewshot_val
    from models.grid_proto_fewshot import FewShotSeg
    from torch.utils.data import DataLoader
    from util.metric import Metric

    model = FewShotSeg(cfg=ORIGINAL_MODEL_CONFIG)
    missing, unexpected = model.load_state_dict(torch.load(weights_file), strict=False)
    if unexpected or any(not key.startswith("encoder.aspp") for key in missing):
        raise RuntimeError(f"weights do not fit the original: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.eval()
    labels = organs or [1, 2, 3, 4]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        dataset, scans = med_fewshot_val(dataset_name=DATASET, base_dir=str(original_data_folder(dataset_dir, Path(folder))),
                                         idx_split=FOLD, scan_per_load=-1, act_labels=labels, npart=N_PARTS, nsup=1,
                                         extern_normalize_func=get_normalize_op(modality="MR", fids=None))
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=1)
        loaded = time.perf_counter()
        n_query_scans = len(query_scans) if query_scans else len(scans.pid_curr_load) - 1  # all but the support
        metric = Metric(max_label=len(ORIGINAL_LABEL_NAMES) - 1, n_scans=n_query_scans)
        encoded = 0
        with torch.no_grad():
            for label in labels:
                dataset.set_curr_cls(label)
                support = scans.get_support(curr_class=label, class_idx=[label], scan_idx=[ORIGINAL_SUPPORT_SCAN_INDEX],
                                            npart=N_PARTS)
                part_images = support["support_images"][0]  # part -> (shot, 3, H, W)
                part_foreground = [shots["fg_mask"].float() for shots in support["support_mask"][0]]  # part -> (shot, H, W)
                part_background = [shots["bg_mask"].float() for shots in support["support_mask"][0]]
                scan_count = -1
                for sample in loader:
                    scan_id = sample["scan_id"][0]
                    if scan_id in scans.potential_support_sid or (query_scans and int(scan_id) not in query_scans):
                        continue
                    if sample["is_start"]:
                        scan_count += 1
                        prediction_volume = np.full((ORIGINAL_SLICE_SIZE, ORIGINAL_SLICE_SIZE,
                                                     scans.info_by_scan[scan_id]["array_size"][0]), np.nan)
                        slice_index = 0
                    part = int(sample["part_assign"])
                    logits, *_ = model([[shot.unsqueeze(0) for shot in part_images[part]]],
                                       [[shot.unsqueeze(0) for shot in part_foreground[part]]],
                                       [[shot.unsqueeze(0) for shot in part_background[part]]],
                                       [sample["image"]], isval=True, val_wsize=ORIGINAL_VALIDATION_WINDOW)
                    encoded += 1 + len(part_images[part])
                    prediction = logits.argmax(dim=1)[0].numpy()
                    prediction_volume[..., slice_index] = prediction
                    slice_index += 1
                    if sample["z_min"] <= sample["z_id"] <= sample["z_max"]:  # z_margin 0
                        metric.record(prediction, sample["label"][0].numpy(), labels=[label], n_scan=scan_count)
        class_dice, *_ = metric.get_mDice(labels=sorted(labels), n_scan=None, give_raw=True)
        metric.get_mPrecRecall(labels=sorted(labels), n_scan=None, give_raw=True)
        done = time.perf_counter()
    return {"load_s": loaded - started, "segment_and_score_s": done - loaded, "encoded_slices": encoded,
            "organ_dice": dict(zip(map(str, sorted(labels)), np.asarray(class_dice).tolist()))}


# --- both -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, required=True, help="a checkout of SSL-ALPNet's repository")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding CHAOST2/")
    parser.add_argument("--organs", type=int, nargs="+", help="labels to evaluate (default: all four)")
    parser.add_argument("--query-scans", type=int, nargs="+", help="query scans to evaluate (default: the fold's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--side", choices=("both", "original"), default="both", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset_dir = args.data_root / DATASET

    if args.side == "original":
        print(json.dumps(time_original(args.original.resolve(), dataset_dir, args.weights, args.organs, args.query_scans)))
        return

    config = project_config(args.data_root)
    torch.manual_seed(SEED)
    from experiment.assembly import build_model_from_config

    weights = build_model_from_config(config).state_dict()
    with tempfile.TemporaryDirectory() as folder:
        weights_file = Path(folder) / "original_weights.pth"
        torch.save(original_state_dict(weights), weights_file)
        command = [sys.executable, __file__, "--side", "original", "--original", str(args.original),
                   "--weights", str(weights_file), "--data-root", str(args.data_root), "--threads", str(args.threads)]
        for option, values in (("--organs", args.organs), ("--query-scans", args.query_scans)):
            if values:
                command += [option, *map(str, values)]
        result = subprocess.run(command, capture_output=True, encoding="utf-8", env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if result.returncode:
            sys.exit(f"the original's evaluation failed:\n{result.stderr[-3000:]}")
        original = json.loads(result.stdout.strip().splitlines()[-1])
    project = time_project(config, weights, args.organs, args.query_scans)

    organ_dice = {}
    for key, dice in project["dice"].items():
        organ_dice.setdefault(key.split("/")[0], []).append(dice)
    print(f"CPU threads: {args.threads}; organs {args.organs or 'all'}, query scans {args.query_scans or 'all of fold 0'}")
    print("| side | encoded slices | load (s) | segment + score (s) | total (s) |")
    print("|---|---|---|---|---|")
    for name, side in (("original validation loop", original), ("this project (test.py)", project)):
        total = side["load_s"] + side["segment_and_score_s"]
        print(f"| {name} | {side['encoded_slices']} | {side['load_s']:.1f} | {side['segment_and_score_s']:.1f} | {total:.1f} |")
    ratio = ((original["load_s"] + original["segment_and_score_s"]) / (project["load_s"] + project["segment_and_score_s"]))
    print(f"speed-up: {ratio:.2f}x (segment + score alone: "
          f"{original['segment_and_score_s'] / project['segment_and_score_s']:.2f}x)")
    print("mean Dice per organ (original | project):",
          {organ: (round(original["organ_dice"][organ], 4), round(float(np.mean(values)), 4))
           for organ, values in organ_dice.items()})


if __name__ == "__main__":
    main()
