"""Finished runs continued to more steps in new folders (experiment/extension.py, scripts/extend_runs.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train as train_script  # noqa: F401  (registers the "train" command)
from config import ex
from conftest import tiny_config
from experiment.extension import EXTENSION_RECORD_NAME, ExtensionError, extend_run, extended_name
from experiment.layout import RunLayout
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.io import file_sha256, read_json

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN = "DEMO_setting1_psmnet_fold0"
EXTENDED_RUN = "DEMO_setting1_psmnet_longer_fold0"


def train(config: dict) -> None:
    ex.run("train", config_updates=config, named_configs=["demo", "cpu"], options={"--loglevel": "ERROR"})


def test_the_extended_name_goes_before_the_fold():
    assert extended_name("CHAOST2_setting2_group1_psmnet_fold3", "steps6000") == \
        "CHAOST2_setting2_group1_psmnet_steps6000_fold3"
    with pytest.raises(ExtensionError, match="<prefix>_fold<k>"):
        extended_name("CHAOST2_setting1_psmnet", "steps6000")
    with pytest.raises(ExtensionError, match="suffix"):
        extended_name("CHAOST2_setting1_psmnet_fold0", "a/b")


def test_an_extended_run_ends_as_an_uninterrupted_run_and_leaves_its_source_as_it_was(demo_root, tmp_path):
    train(tiny_config(demo_root, tmp_path / "whole", n_steps=4))
    train(tiny_config(demo_root, tmp_path / "table", n_steps=2))
    source = RunLayout(tmp_path / "table" / RUN)
    source_sha = file_sha256(source.last_checkpoint)

    extension = extend_run(source, "longer")
    assert (extension.target.folder.name, extension.step, extension.model_label, extension.copied) == \
        (EXTENDED_RUN, 2, "psmnet_longer", True)
    assert read_json(extension.target.folder / EXTENSION_RECORD_NAME) == \
        {"source_run": RUN, "source_step": 2, "source_checkpoint_sha256": source_sha}
    train(tiny_config(demo_root, tmp_path / "table", n_steps=4, model_label="psmnet_longer"))

    whole = load_checkpoint(RunLayout(tmp_path / "whole" / RUN).last_checkpoint)
    extended = load_checkpoint(extension.target.last_checkpoint)
    assert extended["step"] == 4 and extended["config"]["model_label"] == "psmnet_longer"
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, extended["model"][name]), name
    assert file_sha256(source.last_checkpoint) == source_sha  # the 2-step run is still a 2-step run

    again = extend_run(source, "longer")  # extending the row again copies nothing over the trained copy
    assert not again.copied and load_checkpoint(extension.target.last_checkpoint)["step"] == 4


def test_a_folder_not_extended_from_the_run_is_refused_and_so_is_a_run_without_checkpoint(demo_root, tmp_path):
    train(tiny_config(demo_root, tmp_path, n_steps=2))
    (tmp_path / EXTENDED_RUN).mkdir()
    with pytest.raises(ExtensionError, match=f"{EXTENDED_RUN} exists and was not extended from"):
        extend_run(RunLayout(tmp_path / RUN), "longer")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        extend_run(RunLayout(tmp_path / "DEMO_setting1_alpnet_fold0"), "longer")


def test_the_script_extends_every_fold_of_a_row_and_names_the_label_to_resume_with(demo_root, tmp_path):
    for fold in (0, 1):
        train(tiny_config(demo_root, tmp_path, n_steps=2, eval_fold=fold))
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "extend_runs.py"),
                             str(tmp_path / "DEMO_setting1_psmnet"), "--suffix", "longer"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.count("(copied): resume with model_label=psmnet_longer n_steps=<more than 2>") == 2
    assert all(RunLayout(tmp_path / f"DEMO_setting1_psmnet_longer_fold{fold}").last_checkpoint.is_file()
               for fold in (0, 1))
    missing = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "extend_runs.py"),
                              str(tmp_path / "DEMO_setting1_panet"), "--suffix", "longer"],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "DEMO_setting1_panet: no run folders" in missing.stderr
