"""An evaluation folder holds one evaluation: its summary.json, written last, lists its files, and
the predictions and overlays of an earlier evaluation do not stay beside a new one."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from config import ex
from conftest import tiny_config
from evaluation.reports import begin_evaluation, summarize, write_evaluation
from evaluation.scoring import Evaluation, score_prediction
from utils.io import read_json


def tiny_evaluation() -> Evaluation:
    truth = np.zeros((2, 4, 4), dtype=np.int64)
    truth[:, 1:3, 1:3] = 1
    episode = SimpleNamespace(organ="liver", label=1, query_scan_id=3, query_labels=torch.from_numpy(truth),
                              voxel_spacing=(1.0, 1.0, 1.0))
    return Evaluation([score_prediction(episode, torch.from_numpy(truth.astype(bool)), ("dice",))], {}, ("dice",))


def write_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_a_new_evaluation_removes_the_earlier_ones_outputs_and_lists_its_own(tmp_path):
    earlier = [write_file(tmp_path / "predictions" / f"prediction_liver_scan{scan}.nii.gz") for scan in (3, 4)]
    write_file(tmp_path / "overlays" / "overlay_liver_scan4.png")
    evaluation = tiny_evaluation()
    write_evaluation(evaluation, summarize(evaluation, {"eval_fold": 0}), tmp_path)

    new = [write_file(tmp_path / "predictions" / "prediction_liver_scan3.nii.gz")]  # this evaluation's one file
    write_evaluation(evaluation, summarize(evaluation, {"eval_fold": 0}), tmp_path, outputs=new)
    assert read_json(tmp_path / "summary.json")["files"] == ["predictions/prediction_liver_scan3.nii.gz",
                                                             "scores.csv", "table.md"]
    assert not earlier[1].exists() and not list((tmp_path / "overlays").iterdir())

    begin_evaluation(tmp_path)  # a new evaluation starts: nothing of this one is left to be mistaken for it
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


def test_evaluating_again_without_predictions_leaves_none_of_the_earlier_ones(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    options = dict(named_configs=["demo", "cpu"], options={"--loglevel": "ERROR"})
    ex.run("train", config_updates=config, **options)
    ex.run("test", config_updates={**config, "save_predictions": True, "save_overlays": True}, **options)
    output_dir = tmp_path / "DEMO_setting1_psmnet_fold0" / "evaluation_fold0"
    files = read_json(output_dir / "summary.json")["files"]
    assert {path.as_posix() for path in map(lambda p: p.relative_to(output_dir), output_dir.rglob("*.*"))} == \
        {*files, "summary.json"}
    assert sum(name.startswith("predictions/") for name in files) == sum(name.startswith("overlays/") for name in files) > 0

    ex.run("test", config_updates=config, **options)
    assert read_json(output_dir / "summary.json")["files"] == ["scores.csv", "table.md"]
    assert not (output_dir / "predictions").exists() and not (output_dir / "overlays").exists()
    assert not (output_dir / ".lock").exists()
