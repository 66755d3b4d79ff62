"""What trained models do inside an episode: prototype counts per organ, and MCAM's update sizes.

    python scripts/inspect_runs.py runs/CHAOST2_setting1_psmnet_fold0 runs/CHAOST2_setting1_alpnet_fold0

Every run of a prototype model is rebuilt from its checkpoints/last.pth and the config stored in
it, and looked at on its fold's protocol test episodes (one support slice per organ and part of
its z-range); runs of other models (UniverSeg) are skipped with a note:

- prototypes: the model's `class_prototypes` on the test supports: valid foreground and
  background prototypes, and the support foreground's area in feature cells (the soft mask
  summed), averaged over the parts. SSL-ALPNet's local windows, for instance, need the mask to
  cover most of a window, which a small organ on a coarse feature grid rarely does.
- attention (models with MCAM): per level, the mean norm of the query features entering the
  block, of the block's residual update, and of the update minus its mean over the query
  positions (how much the update differs from one position to another), on the first query
  slices of every episode.
- with `--mcam-variants` (models with MCAM): the fold's test Dice, precision and recall (organs'
  means, as test.py scores them) with MCAM's updates as trained, centred (each block's update
  minus its mean over the query positions, so the same shift at every position is removed) and
  dropped (every block returns its input: PSM alone with the trained weights). Nothing is
  written into the runs.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from einops import rearrange

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.reports import format_value  # noqa: E402
from evaluation.scoring import evaluate_episodes, mean_and_std  # noqa: E402
from experiment.assembly import fold_data, load_trained_model, test_episodes  # noqa: E402
from experiment.layout import RunLayout  # noqa: E402
from models.base import FewShotSegmenter  # noqa: E402
from models.prototypes import resize_masks  # noqa: E402

QUERY_SLICES = 4  # query slices per episode for the attention report
MCAM_VARIANTS = ("as trained", "centred", "dropped")
VARIANT_METRICS = ("dice", "precision", "recall")


def trained_model_and_test_episodes(run_dir: Path, data_root: str | None, derived_root: str | None):
    """(model in eval mode, the fold's test episodes at the run's image size, the run's config);
    data_root and derived_root, when given, replace the ones stored in the checkpoint."""
    trained = load_trained_model(RunLayout(run_dir).last_checkpoint)
    trained.model.eval()
    config = {**trained.config, "data_root": data_root or trained.config["data_root"],
              "derived_root": derived_root or trained.config["derived_root"]}
    return trained.model, test_episodes(config, fold_data(config)), config


@torch.no_grad()
def prototype_counts(model, episodes) -> dict[str, tuple[float, float, float]]:
    """{organ: (mean valid foreground prototypes, mean valid background prototypes, mean foreground area)}."""
    counts = {}
    for episode in {episode.organ: episode for episode in episodes}.values():  # supports depend on the organ only
        support_images, support_masks = episode.support_images, episode.support_masks  # (P, S, 3, H, W), (P, S, H, W)
        features, _ = model.encode(support_images, episode.query_images[:1])  # (P, S, C, h, w)
        masks = resize_masks(support_masks, tuple(features.shape[-2:]))  # (P, S, h, w)
        prototypes = model.class_prototypes(features, support_masks)  # as the model's forward: image-size masks
        counts[episode.organ] = (prototypes.foreground_valid.sum(dim=1).float().mean().item(),
                                 prototypes.background_valid.sum(dim=1).float().mean().item(),
                                 masks.sum(dim=(1, 2, 3)).mean().item())
    return counts


@torch.no_grad()
def attention_update_norms(model, episodes) -> list[tuple[float, float, float]] | None:
    """Per MCAM level: (|query features|, |update|, |update - its mean over positions|), means over
    positions and episodes; None for a model without MCAM."""
    cross_attention = getattr(model, "cross_attention", None)
    if cross_attention is None:
        return None
    norms = [[] for _ in cross_attention.levels]

    def record(level: int):
        def hook(block, inputs, output):  # query features (B, C, h, w) -> features + update (B, C, h, w)
            tokens = rearrange(inputs[0].float(), "b c h w -> b (h w) c")
            update = rearrange(output.float(), "b c h w -> b (h w) c") - tokens
            spread = update - update.mean(dim=1, keepdim=True)
            norms[level].append(torch.stack([tokens.norm(dim=-1).mean(), update.norm(dim=-1).mean(),
                                             spread.norm(dim=-1).mean()]))
        return hook

    handles = [block.register_forward_hook(record(level)) for level, block in enumerate(cross_attention.levels)]
    try:
        for episode in episodes:
            middle_part = episode.support_images.shape[0] // 2
            queries = episode.query_images[episode.part_index == middle_part][:QUERY_SLICES]
            model(episode.support_images[middle_part : middle_part + 1],
                  episode.support_masks[middle_part : middle_part + 1], queries)
    finally:
        for handle in handles:
            handle.remove()
    return [tuple(torch.stack(level).mean(dim=0).tolist()) for level in norms]


@contextmanager
def mcam_updates(model, variant: str):
    """Inside the `with` statement, every MCAM level's update (its output minus its input, (B, C, h, w)) is
    kept ("as trained"), centred over the query positions ("centred") or dropped ("dropped")."""
    if variant not in MCAM_VARIANTS:
        raise ValueError(f"MCAM variant must be one of {MCAM_VARIANTS}, got {variant!r}")

    def hook(block, inputs, output):
        if variant == "centred":
            return output - (output - inputs[0]).mean(dim=(2, 3), keepdim=True)
        return inputs[0] if variant == "dropped" else output

    handles = [block.register_forward_hook(hook) for block in model.cross_attention.levels]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def mcam_variant_scores(model, episodes, batch_size: int) -> dict[str, dict[str, float]]:
    """{variant: {metric: organs' mean of the per-organ means over query scans}} on the test
    episodes (fractions, as test.py's table before its scaling), for every MCAM variant."""
    scores = {}
    for variant in MCAM_VARIANTS:
        with mcam_updates(model, variant):
            evaluation = evaluate_episodes(model, episodes, torch.device("cpu"), "fp32", batch_size, VARIANT_METRICS)
        scores[variant] = {metric: mean_and_std(list(evaluation.organ_means(metric).values()))[0]
                           for metric in VARIANT_METRICS}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with checkpoints/last.pth)")
    parser.add_argument("--data-root", help="overrides the data_root stored in the checkpoints")
    parser.add_argument("--derived-root", help="overrides the derived_root stored in the checkpoints")
    parser.add_argument("--mcam-variants", action="store_true",
                        help="also score the test episodes with MCAM's updates as trained, centred and dropped")
    args = parser.parse_args()
    prototype_lines = ["| run | organ | foreground prototypes | background prototypes | support foreground (feature cells) |",
                       "|---|---|---|---|---|"]
    attention_lines = ["| run | MCAM level | query features | update | update - its mean over positions |",
                       "|---|---|---|---|---|"]
    variant_lines = ["| run | MCAM updates | " + " | ".join(VARIANT_METRICS) + " |", "|---|---|---|---|---|"]
    for run_dir in args.runs:
        model, episodes, config = trained_model_and_test_episodes(run_dir, args.data_root, args.derived_root)
        if not isinstance(model, FewShotSegmenter):
            print(f"{run_dir.name}: skipped, {type(model).__name__} has no prototypes", file=sys.stderr)
            continue
        for organ, (foreground, background, area) in prototype_counts(model, episodes).items():
            prototype_lines.append(f"| {run_dir.name} | {organ} | {foreground:.1f} | {background:.1f} | {area:.1f} |")
        for level, (tokens, update, spread) in enumerate(attention_update_norms(model, episodes) or [], start=1):
            attention_lines.append(f"| {run_dir.name} | {level} | {tokens:.2f} | {update:.2f} | {spread:.2f} |")
        if args.mcam_variants and getattr(model, "cross_attention", None) is not None:
            for variant, values in mcam_variant_scores(model, episodes, config["eval_batch_size"]).items():
                variant_lines.append(f"| {run_dir.name} | {variant} | "
                                     + " | ".join(format_value(values[metric], metric) for metric in VARIANT_METRICS)
                                     + " |")
    print("Prototypes per class on the test supports (means over parts)\n\n" + "\n".join(prototype_lines))
    if len(attention_lines) > 2:
        print("\nMCAM residual updates, mean norms over query positions\n\n" + "\n".join(attention_lines))
    if len(variant_lines) > 2:
        print("\nTest scores (%, organs' mean) with MCAM's updates as trained, centred over the query positions, "
              "dropped\n\n" + "\n".join(variant_lines))


if __name__ == "__main__":
    main()
