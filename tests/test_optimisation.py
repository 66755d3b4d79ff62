"""The optimiser and learning-rate schedule built from a config."""
from __future__ import annotations

import pytest
import torch

from experiment.optimisation import build_optimizer, build_scheduler


def schedule_config(**overrides) -> dict:
    config = dict(lr_schedule="step", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, lr_decay=0.5,
                  lr_decay_every=10, warmup_steps=0)
    config.update(overrides)
    return config


def learning_rates(config: dict, n_steps: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(config, [parameter])
    scheduler = build_scheduler(config, optimizer)
    rates = []
    for _ in range(n_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_step_decay_halves_the_rate_every_period():
    rates = learning_rates(schedule_config(), 25)
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.05) and rates[20] == pytest.approx(0.025)


def test_warmup_rises_linearly_then_the_step_decay_counts_from_its_end():
    rates = learning_rates(schedule_config(warmup_steps=4), 20)
    assert rates[:5] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert rates[13] == pytest.approx(0.1) and rates[14] == pytest.approx(0.05)


def test_optimizers_by_name_and_unknown_name_refused():
    parameter = torch.nn.Parameter(torch.zeros(1))
    assert isinstance(build_optimizer(schedule_config(), [parameter]), torch.optim.SGD)
    adamw = build_optimizer(schedule_config(optimizer="adamw", lr=1e-3), [parameter])
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(schedule_config(optimizer="adam"), [parameter])
