"""Steps skipped as SSL-ALPNet's training.py skips an episode it cannot score: the decision, no update
on a skipped step (parameters, optimiser, schedule; BatchNorm's running statistics move, as there),
the count in checkpoints and tensorboard, exact resume, and the config of runs saved before the
option existed. The model's rule itself (which episodes the original cannot score) is tested in
tests/test_models_alpnet.py."""
from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train as train_script
from config import composed_config, ex
from conftest import tiny_config
from experiment import tracks
from experiment.assembly import build_model_from_config, upgrade_saved_config
from experiment.config_checks import ConfigError, check_training_config
from experiment.curves import SKIPPED_STEPS_TAG, TOTAL_LOSS_TAG
from experiment.layout import RunLayout
from experiment.training_step import SCORE_ZERO, SKIP, skips_step
from models.base import FewShotOutput
from utils.checkpoint import load_checkpoint

RUN_NAME = "DEMO_setting1_alpnet_fold0"


def _output(scorable: list[bool] | None) -> FewShotOutput:
    return FewShotOutput(logits=torch.zeros(2, 2, 4, 4),
                         scorable=None if scorable is None else torch.tensor(scorable))


def test_a_step_is_skipped_under_skip_when_one_of_its_episodes_cannot_be_scored():
    assert skips_step(_output([True, False]), SKIP)
    assert not skips_step(_output([True, True]), SKIP)
    assert not skips_step(_output([False, False]), SCORE_ZERO)  # trained on, with a background score of 0
    assert not skips_step(_output(None), SKIP)  # a model without the notion (UniverSeg)
    with pytest.raises(ValueError, match="empty_background_prototypes"):
        skips_step(_output([True]), "sometimes")


def test_skip_is_the_default_and_other_values_are_refused_before_training():
    config = composed_config(["demo", "cpu", "alpnet"])
    assert config["empty_background_prototypes"] == SKIP
    with pytest.raises(ConfigError, match="empty_background_prototypes"):
        check_training_config({**config, "empty_background_prototypes": "sometimes"})


def test_runs_saved_before_the_option_keep_the_behaviour_they_were_trained_with():
    for model, expected in (("alpnet", SCORE_ZERO), ("psmnet", SKIP)):
        saved = composed_config(["demo", "cpu", model])
        del saved["empty_background_prototypes"]
        assert upgrade_saved_config(saved)["empty_background_prototypes"] == expected, model


def _skipping_steps(monkeypatch, skipped_iterations: set[int]) -> None:
    """Mark the training steps at these iterations (from 0) skipped, whatever their episodes."""
    training_step = tracks.FewShotTrack.training_step

    def step(self, batch, iteration):
        outcome = training_step(self, batch, iteration)
        outcome.skipped = iteration in skipped_iterations
        return outcome

    monkeypatch.setattr(tracks.FewShotTrack, "training_step", step)


def _train(demo_root, runs_root, **overrides):
    config = tiny_config(demo_root, runs_root, validate_every=0, **overrides)
    return ex.run("train", config_updates=config, named_configs=["demo", "cpu", "alpnet"],
                  options={"--loglevel": "ERROR"}).result


def test_a_skipped_step_changes_no_parameter_and_no_optimiser_or_schedule_state(demo_root, tmp_path, monkeypatch):
    _skipping_steps(monkeypatch, {0, 1, 2})
    result = _train(demo_root, tmp_path, n_steps=3, checkpoint_every=3)
    run = RunLayout(tmp_path / RUN_NAME)
    initial, last = load_checkpoint(run.initial_checkpoint), load_checkpoint(run.last_checkpoint)
    assert last["step"] == 3 and result["skipped_steps"] == 3
    assert last["extra"][train_script.SKIPPED_STEPS_KEY] == 3
    parameters = {name for name, _ in build_model_from_config(last["config"]).named_parameters()}
    for name in parameters:
        assert torch.equal(initial["model"][name], last["model"][name]), name
    # the forward pass ran, as the original's encoder ran before its scoring failed: BatchNorm's
    # running statistics follow the skipped episodes there as here
    buffers = set(initial["model"]) - parameters
    assert any(not torch.equal(initial["model"][name], last["model"][name]) for name in buffers)
    assert last["optimizer"]["state"] == {}  # no momentum buffer: SGD never stepped
    assert last["scheduler"] == initial["scheduler"]  # the learning-rate schedule did not advance
    events = EventAccumulator(str(run.tensorboard))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars(SKIPPED_STEPS_TAG)] == [(1, 1), (2, 2), (3, 3)]
    assert TOTAL_LOSS_TAG not in events.Tags()["scalars"]  # a skipped step has no losses to log


def test_a_run_with_skipped_steps_resumes_exactly(demo_root, tmp_path, monkeypatch):
    # the second step (the last before the interruption, at a checkpoint) and the third are skipped
    _skipping_steps(monkeypatch, {1, 2})
    _train(demo_root, tmp_path / "whole", n_steps=5)
    _train(demo_root, tmp_path / "split", n_steps=2)
    assert load_checkpoint(RunLayout(tmp_path / "split" / RUN_NAME).last_checkpoint)["step"] == 2
    _train(demo_root, tmp_path / "split", n_steps=5)
    whole, split = (load_checkpoint(RunLayout(tmp_path / name / RUN_NAME).last_checkpoint) for name in ("whole", "split"))
    assert whole["extra"][train_script.SKIPPED_STEPS_KEY] == split["extra"][train_script.SKIPPED_STEPS_KEY] == 2
    assert whole["scheduler"] == split["scheduler"] and whole["scheduler"]["last_epoch"] == 3  # 5 steps, 3 updates
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, split["model"][name]), name
