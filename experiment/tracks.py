"""The two training regimes train.py runs with one loop (docs/DESIGN.md, "Two tracks, one loop").

A track is what differs between few-shot episodic training and semi-supervised training; the loop
(train.py: optimisation, logging, validation schedule, checkpoints, resume) is the same for both:

    track = build_track(config, device, precision, ranks)
    track.model                       the module checkpoints store and test.py rebuilds
    track.parameter_groups()          {group: parameters}, one optimiser each
    track.batches(start_step)         endless batches, from a step on as an uninterrupted run
    track.training_step(batch, i)     -> StepOutcome: weighted losses, scalars to log, a panel, and
                                         whether the step is skipped (no update)
    track.after_update(i)             after the optimiser step (EMA teachers)
    track.validate()                  -> Validation: Dice per class or organ, panels
    track.selects_best                whether the best validation's weights are kept (best.pth)
    track.training_panel_tag          the tensorboard tag of the training step's panel
    track.data_fingerprint()          the content identity of the training data (experiment/data_identity.py)

`FewShotTrack`: episodes of a fold (experiment/assembly.py) and the episode losses
(experiment/training_step.py), a step skipped where the model's original skips its episode
(SSL-ALPNet's empty background set, `empty_background_prototypes`); validation on test-style
episodes; the last weights are evaluated.
`SemiSupervisedTrack`: labelled + unlabelled slice batches and a method of models/ (its
`training_losses` and `after_update`); validation on volumes; the best validation Dice is kept, as
SSL4MIS selects its model. A new semi-supervised method changes neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataloaders.slice_batches import slice_batches
from evaluation.scoring import evaluate_episodes
from evaluation.volume_scoring import evaluate_volumes
from experiment.assembly import (build_model_from_config, ensure_superpixels, fold_data, training_dataset,
                                 uses_superpixels, validation_episodes)
from experiment.data_identity import data_fingerprint
from experiment.semi_supervised_assembly import build_method, semi_supervised_data, training_slices
from experiment.training_step import episode_losses, skips_step
from models import SEMI_SUPERVISED, model_track
from utils.distributed import Ranks, data_parallel, main_rank_first
from utils.runtime import autocast
from utils.seeding import make_generator, worker_init_fn
from utils.tensorboard_panels import episode_panel, segmentation_panel, test_episode_panel

VALIDATION_METRICS = ("dice",)  # validation scores Dice only: surface distances would slow training down


@dataclass
class StepOutcome:
    """losses: {term: weighted scalar tensor} (their sum is minimised); scalars: other values to log;
    panel(): an image panel of the step's first example (made only when logged); skipped: the step
    takes no optimiser or scheduler step (the same on every rank), its losses are not logged."""

    losses: dict[str, torch.Tensor]
    panel: Callable[[], torch.Tensor]
    scalars: dict[str, float] = field(default_factory=dict)
    skipped: bool = False


@dataclass
class Validation:
    """Mean validation Dice per class (semi-supervised) or organ (few-shot), and image panels."""

    dice: dict[str, float]
    panels: dict[str, torch.Tensor]


class FewShotTrack:
    """Episodic training of a few-shot model on a fold (docs/PROTOCOL.md, "Training")."""

    selects_best = False
    training_panel_tag = "train/support_query_prediction_truth"

    def __init__(self, config: dict, device: torch.device, precision: str, ranks: Ranks) -> None:
        self.config, self.device, self.precision, self.ranks = config, device, precision, ranks
        # model first: missing pretrained weights stop the run before minutes of data preparation
        self.model = build_model_from_config(config).to(device)
        data = fold_data(config)
        if uses_superpixels(config):
            with main_rank_first(ranks), tqdm(total=len(data.spec.scan_ids), desc=f"superpixels of {data.spec.name}",
                                              dynamic_ncols=True, disable=not ranks.is_main) as bar:
                ensure_superpixels(config, data, on_scan_done=lambda scan_id: bar.update())
        self.episodes = training_dataset(config, data)
        self.validation = validation_episodes(config, data)
        self.class_weights = torch.tensor(config["class_weights"], dtype=torch.float32, device=device)
        self.network = self.model

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(self.model.parameters())}

    def data_fingerprint(self) -> dict:
        """The content identity of the dataset the episodes come from (a resume checks it)."""
        return data_fingerprint(self.config)

    def batches(self, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's episode batches; under torchrun the model is wrapped for data parallelism here,
        after a resume has loaded its weights."""
        self.network = data_parallel(self.model, self.ranks, self.device)
        self.network.train()
        config = self.config
        for batch in episode_batches(self.episodes, config["batch_size"], start_step, config["num_workers"],
                                     config["seed"], self.ranks):
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def training_step(self, batch: dict[str, torch.Tensor], iteration: int) -> StepOutcome:
        output, losses = episode_losses(self.network, batch, self.config, self.class_weights, self.device,
                                        self.precision)
        skipped = skips_step(output, self.config["empty_background_prototypes"], self.ranks)
        return StepOutcome(losses, skipped=skipped, panel=lambda: episode_panel(
            support_image=batch["support_images"][0, 0], support_mask=batch["support_masks"][0, 0],
            query_image=batch["query_images"][0], prediction=output.logits[0].argmax(0),
            truth=batch["query_labels"][0]))

    def after_update(self, iteration: int) -> None:
        """Nothing: the few-shot models have no training-only state."""

    def validate(self) -> Validation:
        evaluation = evaluate_episodes(self.model, self.validation, self.device, self.precision,
                                       self.config["eval_batch_size"], VALIDATION_METRICS)
        first = self.validation[0]
        panel = test_episode_panel(first, evaluation.predictions[(first.label, first.query_scan_id)])
        return Validation(evaluation.organ_means("dice"), {"validation/support_query_prediction_truth": panel})


class SemiSupervisedTrack:
    """A semi-supervised method on labelled + unlabelled slices (docs/PROTOCOL.md, "Semi-supervised
    segmentation"); single process (torchrun is refused by the config checks)."""

    selects_best = True
    training_panel_tag = "train/image_prediction_truth"

    def __init__(self, config: dict, device: torch.device, precision: str, ranks: Ranks) -> None:
        self.config, self.device, self.precision = config, device, precision
        self.model = build_method(config).to(device)
        self.data = semi_supervised_data(config)
        self.slices = training_slices(config, self.data)
        self.validation = self.data.evaluation_volumes(self.data.validation_ids)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return self.model.optimised_parameters()

    def data_fingerprint(self) -> dict:
        """The content identity of the dataset the slices and volumes come from (a resume checks it)."""
        return data_fingerprint(self.config)

    def batches(self, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        self.model.train()
        for batch in slice_batches(self.slices, start_step, self.config["num_workers"], self.config["seed"]):
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def training_step(self, batch: dict[str, torch.Tensor], iteration: int) -> StepOutcome:
        images, labels = batch["image"], batch["label"]  # (B, 1, P, P), (B, P, P)
        n_labelled = min(self.config["labelled_batch_size"], images.shape[0])
        with autocast(self.device, self.precision):
            step = self.model.training_losses(images[:n_labelled], labels[:n_labelled], images[n_labelled:],
                                              self.method_iteration(iteration))
        return StepOutcome(step.losses, scalars=step.scalars, panel=lambda: segmentation_panel(
            images[0, 0], step.logits[0].argmax(0), labels[0], self.data.n_classes))

    def method_iteration(self, iteration: int) -> int:
        """The iteration the method's schedules (ramp-up, start of a term) read: the loop's, or under
        `schedule_clock="scaled"` the original script's iteration at the same fraction of training."""
        if self.config["schedule_clock"] == "iterations":
            return iteration
        return iteration * self.config["original_n_steps"] // self.config["n_steps"]

    def after_update(self, iteration: int) -> None:
        self.model.after_update(self.method_iteration(iteration))

    def validate(self) -> Validation:
        config = self.config
        evaluation = evaluate_volumes(self.model, self.validation, self.data.classes, config["image_size"],
                                      self.device, self.precision, config["eval_batch_size"], VALIDATION_METRICS,
                                      config["metric_rules"])
        first = self.validation[0]
        middle = first.image.shape[0] // 2
        prediction = sum(label * evaluation.predictions[(label, first.case_id)][middle].long()
                         for label in self.data.classes)
        panel = segmentation_panel(torch.tensor(first.image[middle]), prediction,
                                   torch.tensor(first.label[middle]), self.data.n_classes)
        return Validation(evaluation.organ_means("dice"), {"validation/image_prediction_truth": panel})


def episode_batches(dataset, batch_size: int, start_step: int, num_workers: int, seed: int, ranks: Ranks = Ranks()):
    """Endless stacked episode batches of this rank, starting at `start_step` as an uninterrupted run would.

    Episodes depend only on (seed, epoch, index), so a resumed run sets the epoch and skips to the
    index where the interrupted run stopped instead of replaying the loader, and rank r of K builds
    only its share of each step's `batch_size` episodes: every K-th, from the r-th.
    """
    steps_per_epoch = len(dataset) // batch_size
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    while True:
        dataset.set_epoch(epoch)
        indices = range(step_in_epoch * batch_size + ranks.rank, steps_per_epoch * batch_size, ranks.world_size)
        loader = DataLoader(dataset, batch_size=ranks.share_of(batch_size), sampler=indices, num_workers=num_workers,
                            worker_init_fn=worker_init_fn, generator=make_generator(seed + epoch), drop_last=True)
        yield from loader
        epoch, step_in_epoch = epoch + 1, 0


def build_track(config: dict, device: torch.device, precision: str, ranks: Ranks) -> FewShotTrack | SemiSupervisedTrack:
    """The track of the config's model: few-shot episodes or semi-supervised slice batches."""
    track = SemiSupervisedTrack if model_track(config["model"]["name"]) == SEMI_SUPERVISED else FewShotTrack
    return track(config, device, precision, ranks)
