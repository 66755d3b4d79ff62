"""The optimiser and learning-rate schedule of a run (docs/PROTOCOL.md, "Training").

Both few-shot originals train with SGD (momentum 0.9, weight decay 5e-4) and a step decay of the
learning rate. AdamW is the option for models trained with Adam in their papers (UniverSeg); on the
demo it did not beat SGD (docs/results/demo.md). A linear warm-up may precede the step decay (the
demo's `quick` schedule uses one). The semi-supervised originals (SSL4MIS) decay polynomially:
after iteration i the learning rate becomes lr x (1 - i / n_steps) ^ 0.9 (`lr_schedule="poly"`).

`Optimisation` holds one optimiser and schedule per parameter group of a track
(experiment/tracks.py): one group for most models; a method whose parts train with different
optimisers (KnowSAM: SGD for its networks, Adam for SAM) returns several groups, and the config's
`group_optimizers` gives a group the settings that differ from the run's (`optimizer`, `lr`,
`momentum`, `weight_decay`); every group follows the run's schedule.
"""
from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = ("sgd", "adamw")
GROUP_SETTINGS = ("optimizer", "lr", "momentum", "weight_decay")  # what `group_optimizers` may set per group
LR_SCHEDULES = ("step", "poly")


def build_optimizer(config: dict, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The config's optimiser over `parameters` (keys: optimizer, lr, momentum, weight_decay)."""
    name = config["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=config["lr"], momentum=config["momentum"],
                               weight_decay=config["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=config["lr"], weight_decay=config["weight_decay"])
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def build_scheduler(config: dict, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """`lr_schedule` "poly": SSL4MIS's polynomial decay; "step": step decay (lr_decay every
    lr_decay_every steps) after `warmup_steps` of linear warm-up."""
    if config["lr_schedule"] == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: poly_factor(step, config["n_steps"],
                                                                                     config["poly_power"]))
    step_decay = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config["lr_decay_every"],
                                                 gamma=config["lr_decay"])
    warmup_steps = config["warmup_steps"]
    if warmup_steps <= 0:
        return step_decay
    # step k (from 0) of the warm-up uses (k + 1) / warmup_steps of the learning rate
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, step_decay], milestones=[warmup_steps])


def poly_factor(step: int, n_steps: int, power: float) -> float:
    """The learning-rate factor of step `step` (from 0) under SSL4MIS's polynomial decay: its loop sets
    lr x (1 - i / n_steps) ^ power after iteration i, so step 0 and step 1 both run at the full rate
    and step s > 0 at (1 - (s - 1) / n_steps) ^ power."""
    return 1.0 if step == 0 else (1.0 - (step - 1) / n_steps) ** power


class Optimisation:
    """One optimiser and learning-rate schedule per parameter group, stepped together."""

    def __init__(self, config: dict, parameter_groups: dict[str, Iterable[torch.nn.Parameter]]) -> None:
        settings = config["group_optimizers"]
        unknown = sorted(set(settings) - set(parameter_groups))
        if unknown:
            raise ValueError(f"group_optimizers names parameter group(s) {unknown} the model does not have; its "
                             f"groups: {sorted(parameter_groups)}")
        self.optimizers = {name: build_optimizer({**config, **settings.get(name, {})}, parameters)
                           for name, parameters in parameter_groups.items()}
        self.schedulers = {name: build_scheduler(config, optimizer) for name, optimizer in self.optimizers.items()}

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Every optimiser's step, then every schedule's."""
        for optimizer in self.optimizers.values():
            optimizer.step()
        for scheduler in self.schedulers.values():
            scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        """{group: its current learning rate}."""
        return {name: scheduler.get_last_lr()[0] for name, scheduler in self.schedulers.items()}

    def state_dicts(self) -> tuple[dict, dict]:
        """(optimiser states, schedule states): a single group's own state dicts (the layout of
        checkpoints written before groups existed), else {group: state dict}."""
        if len(self.optimizers) == 1:
            (optimizer,), (scheduler,) = self.optimizers.values(), self.schedulers.values()
            return optimizer.state_dict(), scheduler.state_dict()
        return ({name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
                {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()})

    def checkpoint_states(self) -> dict[str, dict]:
        """The `optimizer` and `scheduler` entries of a checkpoint (utils/checkpoint.save_checkpoint)."""
        optimizer_state, scheduler_state = self.state_dicts()
        return {"optimizer": optimizer_state, "scheduler": scheduler_state}

    def load_state_dicts(self, optimizer_state: dict, scheduler_state: dict) -> None:
        if len(self.optimizers) == 1:
            (optimizer,), (scheduler,) = self.optimizers.values(), self.schedulers.values()
            optimizer.load_state_dict(optimizer_state)
            scheduler.load_state_dict(scheduler_state)
            return
        for name in self.optimizers:
            self.optimizers[name].load_state_dict(optimizer_state[name])
            self.schedulers[name].load_state_dict(scheduler_state[name])
