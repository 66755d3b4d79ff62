"""Count the training episodes whose support background has no local prototype, per fold.

SSL-ALPNet scores its background with local prototypes only: the windows of the support's
background whose mean mask value is above the threshold (4 x 4 feature windows in training, 0.95).
An episode without such a window cannot be scored by the original, whose training.py skips it; this
project skips it too unless `empty_background_prototypes="score_zero"` (docs/METHOD.md). This script
draws the first N training episodes of each fold, as train.py's first N steps draw them (epoch 0,
`steps_per_epoch` = N), and counts those whose support background has no such window, with the
model's own rule (`ALPNet.class_prototypes` and `scorable` on the support masks at the config's
feature grid). The alignment branch's condition (the query's predicted background) depends on the
trained weights and is not counted here.

    FSMIS_DATA_ROOT=../shared/data python scripts/count_empty_background_sets.py chaost2 setting1 cpu \
        --episodes 3000 --folds 0 1 2 3 4

Config arguments are train.py's (named configs and key=value), e.g. the paper's configuration at
256 px without downloading weights: `chaost2 setting1 model.pretrained=None`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import composed_config, parse_command_line  # noqa: E402
from experiment.assembly import (build_model_from_config, ensure_superpixels, fold_data,  # noqa: E402
                                 training_dataset)

MODEL = "alpnet"  # the model whose original cannot score such an episode


def count_empty_background_sets(config: dict) -> tuple[int, int]:
    """(episodes drawn, episodes whose support background has no local prototype) of one fold's
    first `steps_per_epoch` training episodes."""
    data = fold_data(config)
    ensure_superpixels(config, data)
    episodes = training_dataset(config, data)
    episodes.set_epoch(0)
    model = build_model_from_config(config).train()  # the training window
    image_shape = episodes[0]["support_images"].shape[1:]  # (3, H, W) at the config's image size
    with torch.no_grad():
        feature_grid = model.encoder(torch.zeros(1, *image_shape)).shape[-2:]
    empty = 0
    for index in tqdm(range(len(episodes)), desc=f"fold {config['eval_fold']}", leave=False):
        support_masks = episodes[index]["support_masks"].unsqueeze(0)  # (1, S, H, W)
        features = torch.zeros(1, support_masks.shape[1], 1, *feature_grid)  # only the masks decide
        scorable = model.scorable(model.class_prototypes(features, support_masks))
        empty += int(not scorable.all())
    return len(episodes), empty


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="+", help="named configs and key=value updates, e.g. chaost2 setting1 cpu")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes drawn per fold (default %(default)s)")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-root", default=None, help="folder holding <DATASET>/ (default: $FSMIS_DATA_ROOT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    named_configs, updates = parse_command_line(args.config)
    updates.update(steps_per_epoch=args.episodes, **({"data_root": args.data_root} if args.data_root else {}))
    totals = [0, 0]
    print(f"{' '.join(args.config)}, {MODEL}: training episodes whose support background has no local prototype")
    print("| fold | episodes | empty background set | % | seconds |\n|---|---|---|---|---|")
    for fold in args.folds:
        config = composed_config([*named_configs, MODEL], {**updates, "eval_fold": fold})
        start = time.perf_counter()
        drawn, empty = count_empty_background_sets(config)
        totals = [totals[0] + drawn, totals[1] + empty]
        print(f"| {fold} | {drawn} | {empty} | {100 * empty / drawn:.2f} | {time.perf_counter() - start:.0f} |")
    print(f"| all | {totals[0]} | {totals[1]} | {100 * totals[1] / totals[0]:.2f} | |")


if __name__ == "__main__":
    main()
