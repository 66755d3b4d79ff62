"""The data a run trains on and the options an evaluation scores with are part of what they are:
a resume on other data is refused, an evaluation away from the protocol's options (or on other
data) gets a folder of its own and records them, and fold tables do not mix two ways of evaluating."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script
from config import ex
from conftest import tiny_config
from dataloaders.acdc import PATIENTS_TO_SLICES
from dataloaders.specs import get_spec
from experiment.data_identity import DATA_FINGERPRINT_KEY, data_fingerprint
from experiment.layout import RunLayout
from test_semi_supervised import tiny_run_config, write_tiny_acdc
from utils.checkpoint import load_checkpoint
from utils.io import read_array, read_image, read_json, write_array_like

RUN = "DEMO_setting1_psmnet_fold0"
OPTIONS = {"--loglevel": "ERROR"}


def run(command: str, config: dict, named_configs=("demo", "cpu")):
    return ex.run(command, config_updates=config, named_configs=list(named_configs), options=OPTIONS)


def copied_demo(demo_root: Path, root: Path, relabel_scan: int | None = None) -> Path:
    """The demo scans copied under `root` (no derived files); `relabel_scan`: that scan's labels 1 -> 0."""
    (root / "DEMO").mkdir(parents=True)
    for path in (demo_root / "DEMO").glob("*_*.nii.gz"):
        if path.name.startswith(("image_", "label_")):
            shutil.copy(path, root / "DEMO" / path.name)
    if relabel_scan is not None:
        path = root / "DEMO" / f"label_{relabel_scan}.nii.gz"
        labels = read_array(path)
        labels[labels == 1] = 0
        write_array_like(labels, read_image(path), path)
    return root


def demo_sha256(data_root: Path | str) -> str:
    return data_fingerprint({"dataset": "DEMO", "data_root": str(data_root), "derived_root": None})["sha256"]


def test_evaluation_folders_name_the_options_that_depart_from_the_protocol():
    run_layout = RunLayout(Path("runs") / "r")
    assert run_layout.evaluation(0).name == "evaluation_fold0"
    assert run_layout.evaluation(0, departures={"z_margin": 3, "n_parts": 1}).name == "evaluation_fold0_nparts1_zmargin3"
    initial = run_layout.initial_checkpoint
    assert (run_layout.evaluation(2, initial, 4, departures={"support_choice": "in_block"}).name
            == "evaluation_fold2_initial_support4_choicein_block")
    assert (run_layout.evaluation(0, run_layout.best_checkpoint, protocol_checkpoint="best.pth",
                                  departures={"metric_rules": "project"}).name == "evaluation_fold0_rulesproject")
    with pytest.raises(ValueError, match="no folder suffix"):
        run_layout.evaluation(0, departures={"seed": 1})


def test_the_data_fingerprint_follows_content_not_location(demo_root, tmp_path):
    config = {"dataset": "DEMO", "data_root": str(demo_root), "derived_root": None}
    original = data_fingerprint(config)
    copy = data_fingerprint({**config, "data_root": str(copied_demo(demo_root, tmp_path / "copy"))})
    relabelled = data_fingerprint({**config, "data_root": str(copied_demo(demo_root, tmp_path / "other", 2))})
    assert copy["sha256"] == original["sha256"] and copy["dataset_dir"] != original["dataset_dir"]
    assert relabelled["sha256"] != original["sha256"]
    assert relabelled["n_files"] == original["n_files"] == 2 * len(get_spec("DEMO").scan_ids)  # image and label
    (tmp_path / "copy" / "DEMO" / "label_3.nii.gz").unlink()
    assert data_fingerprint({**config, "data_root": str(tmp_path / "copy")})["sha256"] != original["sha256"]


def test_resuming_on_data_with_other_labels_is_refused_naming_both_data_roots(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path / "runs", n_steps=2, validate_every=0)
    run("train", config)
    checkpoint = load_checkpoint(RunLayout(tmp_path / "runs" / RUN).last_checkpoint)
    assert checkpoint["extra"][DATA_FINGERPRINT_KEY]["sha256"] == demo_sha256(demo_root)

    copy = copied_demo(demo_root, tmp_path / "copy")  # the same content elsewhere: resumes
    run("train", {**config, "data_root": str(copy), "n_steps": 3})
    assert load_checkpoint(RunLayout(tmp_path / "runs" / RUN).last_checkpoint)["step"] == 3

    other = copied_demo(demo_root, tmp_path / "other", relabel_scan=2)
    with pytest.raises(ValueError, match=rf"cannot resume, the run was trained on other data \({copy / 'DEMO'}.*"
                                         rf"\({other / 'DEMO'}.*pass resume=False.*data_root"):
        run("train", {**config, "data_root": str(other), "n_steps": 4})
    assert load_checkpoint(RunLayout(tmp_path / "runs" / RUN).last_checkpoint)["step"] == 3


def test_a_checkpoint_saved_before_data_fingerprints_resumes(tmp_path):
    current = {"dataset_dir": "/data/DEMO", "sha256": "a" * 64, "n_files": 10}
    train_script.check_same_data(None, current, tmp_path / "last.pth")
    train_script.check_same_data({**current, "dataset_dir": "/elsewhere/DEMO"}, current, tmp_path / "last.pth")
    with pytest.raises(ValueError, match=r"/elsewhere/DEMO, 10 files, content SHA-256 bbbbbbbbbbbb\).*/data/DEMO"):
        train_script.check_same_data({**current, "dataset_dir": "/elsewhere/DEMO", "sha256": "b" * 64}, current,
                                     tmp_path / "last.pth")


def test_few_shot_evaluations_away_from_the_protocol_or_on_other_data_keep_out_of_its_folder(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path / "runs", n_steps=1, validate_every=0)
    run("train", config)
    run("test", config)
    folder = tmp_path / "runs" / RUN
    protocol_summary = (folder / "evaluation_fold0" / "summary.json").read_bytes()
    summary = read_json(folder / "evaluation_fold0" / "summary.json")
    assert summary["evaluation_options"] == {"n_parts": 3, "z_margin": 0, "support_choice": "next",
                                             "n_support_slices": 1, "data_sha256": demo_sha256(demo_root)}
    assert summary["data"]["dataset_dir"] == str((demo_root / "DEMO").resolve())

    run("test", {**config, "n_parts": 1, "z_margin": 3})
    departed = read_json(folder / "evaluation_fold0_nparts1_zmargin3" / "summary.json")
    assert (departed["evaluation_options"]["n_parts"], departed["evaluation_options"]["z_margin"]) == (1, 3)

    other = copied_demo(demo_root, tmp_path / "other", relabel_scan=2)
    run("test", {**config, "data_root": str(other)})
    other_sha256 = demo_sha256(other)
    on_other_data = read_json(folder / f"evaluation_fold0_data{other_sha256[:12]}" / "summary.json")
    assert on_other_data["evaluation_options"]["data_sha256"] == other_sha256
    assert (folder / "evaluation_fold0" / "summary.json").read_bytes() == protocol_summary


def test_semi_supervised_runs_refuse_other_data_on_resume_and_keep_other_metric_rules_apart(tmp_path, monkeypatch):
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)
    acdc = write_tiny_acdc(tmp_path / "data")
    config = tiny_run_config(tmp_path / "data", tmp_path / "runs", n_steps=2, validate_every=2)
    named = ("acdc", "mean_teacher", "cpu")
    run("train", config, named)
    run("test", config, named)
    folder = tmp_path / "runs" / "ACDC_mean_teacher_labelled3_fold0"
    summary = read_json(folder / "evaluation_fold0" / "summary.json")
    acdc_sha256 = data_fingerprint({"dataset": "ACDC", "data_root": config["data_root"], "derived_root": None})["sha256"]
    assert summary["evaluation_options"] == {"metric_rules": "ssl4mis", "scored_slices": "volume",
                                             "postprocessing": "none", "data_sha256": acdc_sha256}
    run("test", {**config, "metric_rules": "project"}, named)
    assert read_json(folder / "evaluation_fold0_rulesproject" / "summary.json")["evaluation_options"][
        "metric_rules"] == "project"

    slice_file = next((acdc / "data" / "slices").glob("*.h5"))
    with h5py.File(slice_file, "r+") as handle:
        handle["label"][...] = 0
    with pytest.raises(ValueError, match="cannot resume, the run was trained on other data"):
        run("train", config, named)  # the same n_steps: its poly schedule reads them
