"""How many prototypes each trained model scores a query with, per organ, on its fold's test supports.

    python scripts/count_prototypes.py runs/CHAOST2_setting1_psmnet_fold0 runs/CHAOST2_setting1_alpnet_fold0

For every run (its checkpoints/last.pth and the config stored in it) the fold's protocol test
supports are encoded (one support slice per organ and part of its z-range) and the model's
`class_prototypes` are counted: valid foreground and background prototypes, and the support
foreground's area in feature cells (the soft mask summed), averaged over the parts. A diagnostic
for comparing prototype schemes: e.g. SSL-ALPNet's local windows need the mask to cover most of a
window, which a small organ on a coarse feature grid rarely does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from dataloaders.experiment_data import dataset_directories, test_episodes, tested_labels  # noqa: E402
from dataloaders.folds import fold_split  # noqa: E402
from dataloaders.specs import get_spec  # noqa: E402
from dataloaders.volumes import load_scans  # noqa: E402
from models import build_model  # noqa: E402
from models.prototypes import resize_masks  # noqa: E402
from utils.checkpoint import LAST_CHECKPOINT, load_checkpoint, load_model_weights  # noqa: E402


@torch.no_grad()
def prototype_counts(run_dir: Path, data_root: str | None, derived_root: str | None) -> dict[str, tuple[float, float, float]]:
    """{organ: (mean valid foreground prototypes, mean valid background prototypes, mean foreground area)}."""
    state = load_checkpoint(run_dir / LAST_CHECKPOINT)
    config = state["config"]
    model = build_model(**config["model"], **config["model_options"])
    load_model_weights(model, state["model"], run_dir / LAST_CHECKPOINT)
    model.eval()
    spec = get_spec(config["dataset"])
    dataset_dir, derived_dir = dataset_directories(data_root or config["data_root"],
                                                   derived_root or config["derived_root"], spec)
    split = fold_split(spec, config["eval_fold"], config["n_shots"], config["support_choice"])
    scans = load_scans(dataset_dir, spec, split.query_ids + split.support_ids, derived_dir=derived_dir,
                       image_size=config["image_size"])
    labels = tested_labels(spec, config["setting"], config["label_group"])
    episodes = test_episodes(scans, split, spec, labels, config["n_parts"])
    counts = {}
    for episode in {episode.organ: episode for episode in episodes}.values():  # supports depend on the organ only
        support_images, support_masks = episode.support_images, episode.support_masks  # (P, S, 3, H, W), (P, S, H, W)
        features, _ = model.encode(support_images, episode.query_images[:1])  # (P, S, C, h, w)
        masks = resize_masks(support_masks, tuple(features.shape[-2:]))  # (P, S, h, w)
        prototypes = model.class_prototypes(features, masks)
        counts[episode.organ] = (prototypes.foreground_valid.sum(dim=1).float().mean().item(),
                                 prototypes.background_valid.sum(dim=1).float().mean().item(),
                                 masks.sum(dim=(1, 2, 3)).mean().item())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with checkpoints/last.pth)")
    parser.add_argument("--data-root", help="overrides the data_root stored in the checkpoints")
    parser.add_argument("--derived-root", help="overrides the derived_root stored in the checkpoints")
    args = parser.parse_args()
    print("| run | organ | foreground prototypes | background prototypes | support foreground (feature cells) |")
    print("|---|---|---|---|---|")
    for run_dir in args.runs:
        for organ, (foreground, background, area) in prototype_counts(run_dir, args.data_root, args.derived_root).items():
            print(f"| {run_dir.name} | {organ} | {foreground:.1f} | {background:.1f} | {area:.1f} |")


if __name__ == "__main__":
    main()
