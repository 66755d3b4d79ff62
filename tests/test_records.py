"""Run records (experiment/records.py, scripts/record_runs.py): a trained and evaluated run kept
without its weights gives the same fold tables and curves, and a record is never changed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from experiment import tracks
from config import ex
from conftest import tiny_config
from experiment.curves import read_scalar_events
from experiment.layout import RunLayout
from experiment.records import RecordError, record_run
from utils.io import read_json, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from summarize_curves import curve_tables  # noqa: E402
from summarize_folds import summary_tables  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_NAME = "DEMO_setting1_psmnet_fold0"


@pytest.fixture(scope="module")
def evaluated_runs(demo_root, tmp_path_factory) -> Path:
    """runs_root with one tiny run trained (4 steps), evaluated, with predictions and overlays."""
    runs_root = tmp_path_factory.mktemp("runs")
    config = tiny_config(demo_root, runs_root, save_predictions=True, save_overlays=True)
    for command in ("train", "test"):
        ex.run(command, config_updates=config, named_configs=["demo", "cpu"], options={"--loglevel": "ERROR"})
    return runs_root


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_record_keeps_evaluations_scalars_and_sacred_configs_but_no_weights_or_predictions(evaluated_runs, tmp_path):
    run = RunLayout(evaluated_runs / RUN_NAME)
    recorded = record_run(run, tmp_path)
    record_files = files_under(recorded.record.folder)
    assert {"evaluation_fold0/summary.json", "evaluation_fold0/scores.csv", "evaluation_fold0/table.md",
            "sacred/1/config.json", "sacred/1/run.json", "sacred/2/config.json", "sacred/2/run.json"} <= record_files
    assert not [name for name in record_files if name.endswith(".pth") or "predictions" in name
                or "overlays" in name or name.endswith("cout.txt")]
    assert [name for name in record_files if name.startswith("tensorboard/")]  # one events file
    # the run itself has what the record leaves out
    run_files = files_under(run.folder)
    assert "checkpoints/last.pth" in run_files and any(name.startswith("evaluation_fold0/predictions/")
                                                       for name in run_files)
    assert read_json(recorded.record.folder / "evaluation_fold0/summary.json") == read_json(
        run.folder / "evaluation_fold0/summary.json")

    events = EventAccumulator(str(recorded.record.tensorboard))
    events.Reload()
    assert events.Tags()["images"] == []
    assert read_scalar_events(recorded.record.tensorboard) == read_scalar_events(run.tensorboard)  # wall times too
    assert [event.step for event in events.Scalars("loss/total")] == [1, 2, 3, 4]


def test_tables_and_curves_of_a_record_are_those_of_its_run(evaluated_runs, tmp_path):
    record_run(RunLayout(evaluated_runs / RUN_NAME), tmp_path)
    prefix = "DEMO_setting1_psmnet"
    from_run = summary_tables([str(evaluated_runs / prefix)], ("dice", "hd95", "precision"))
    from_record = summary_tables([str(tmp_path / prefix)], ("dice", "hd95", "precision"))
    assert from_record == from_run and "| DEMO_setting1_psmnet | 1 |" in from_record
    assert curve_tables([str(tmp_path / prefix)]) == curve_tables([str(evaluated_runs / prefix)])


def test_recording_again_adds_only_what_is_new(evaluated_runs, tmp_path):
    run = RunLayout(evaluated_runs / RUN_NAME)
    first = record_run(run, tmp_path)
    again = record_run(run, tmp_path)
    assert again.added == [] and again.unchanged == len(first.added)
    # a later evaluation of the same run (here a copy of the first one under another name) is added
    extra = run.folder / "evaluation_fold0_initial"
    extra.mkdir()
    write_json(read_json(run.folder / "evaluation_fold0/summary.json"), extra / "summary.json")
    try:
        assert record_run(run, tmp_path).added == [Path("evaluation_fold0_initial/summary.json")]
    finally:
        (extra / "summary.json").unlink()
        extra.rmdir()


def test_a_record_that_would_change_is_refused_before_anything_is_written(evaluated_runs, tmp_path):
    run = RunLayout(evaluated_runs / RUN_NAME)
    record = record_run(run, tmp_path).record
    recorded_summary = record.folder / "evaluation_fold0/summary.json"
    summary = read_json(recorded_summary)
    write_json({**summary, "mean_dice": summary["mean_dice"] + 0.1}, recorded_summary)  # as if another run's
    (record.folder / "sacred/2/run.json").unlink()  # missing: would be added, if anything were written
    with pytest.raises(RecordError, match=r"evaluation_fold0/summary.json: differs from .*never changed"):
        record_run(run, tmp_path)
    assert not (record.folder / "sacred/2/run.json").exists()


def test_a_record_whose_curves_differ_from_the_run_is_refused(evaluated_runs, tmp_path):
    other = tmp_path / "other"
    record = record_run(RunLayout(evaluated_runs / RUN_NAME), other).record
    for path in record.tensorboard.iterdir():
        path.unlink()
    with SummaryWriter(log_dir=str(record.tensorboard)) as writer:
        writer.add_scalar("loss/total", 9.0, 1)
    with pytest.raises(RecordError, match="scalars differ"):
        record_run(RunLayout(evaluated_runs / RUN_NAME), other)


def test_a_run_without_evaluation_is_refused_and_the_script_skips_it(evaluated_runs, tmp_path):
    unevaluated = tmp_path / "runs" / "DEMO_setting1_psmnet_fold1"
    (unevaluated / "tensorboard").mkdir(parents=True)
    with pytest.raises(RecordError, match="no evaluation to record .*run test.py"):
        record_run(RunLayout(unevaluated), tmp_path / "records")
    with pytest.raises(RecordError, match="no evaluation to record"):  # nor did its training fail
        record_run(RunLayout(unevaluated), tmp_path / "records", failed_training=True)
    script = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/record_runs.py"),
                             str(tmp_path / "runs" / "DEMO_setting1_psmnet"), "--to", str(tmp_path / "records")],
                            capture_output=True, text=True, check=True)
    assert "not evaluated yet, skipped" in script.stdout
    assert not (tmp_path / "records").exists()


def test_a_failed_training_is_recorded_with_its_traceback_and_curves_only_when_asked(demo_root, tmp_path, monkeypatch):
    """A training whose loss turns NaN at step 3 (train.py stops, Sacred marks the call FAILED)."""
    runs_root = tmp_path / "runs"
    losses_of = tracks.episode_losses
    steps = []

    def diverging_at_step_3(*args, **kwargs):
        output, losses = losses_of(*args, **kwargs)
        steps.append(len(steps) + 1)
        return output, ({name: loss * float("nan") for name, loss in losses.items()} if len(steps) == 3 else losses)

    monkeypatch.setattr(tracks, "episode_losses", diverging_at_step_3)
    with pytest.raises(train_script.TrainingDiverged, match="step 3: loss is nan"):
        ex.run("train", config_updates=tiny_config(demo_root, runs_root), named_configs=["demo", "cpu"],
               options={"--loglevel": "ERROR"})
    run = RunLayout(runs_root / RUN_NAME)
    assert run.training_failed()
    with pytest.raises(RecordError, match="no evaluation to record .*--failed"):
        record_run(run, tmp_path / "records")
    script = [sys.executable, str(REPO_ROOT / "scripts/record_runs.py"), str(runs_root / "DEMO_setting1_psmnet"),
              "--to", str(tmp_path / "records")]
    skipped = subprocess.run(script, capture_output=True, text=True, check=True)
    assert "not evaluated yet, skipped (its training failed: --failed records it)" in skipped.stdout
    assert not (tmp_path / "records").exists()

    subprocess.run(script + ["--failed"], capture_output=True, text=True, check=True)
    record = RunLayout(tmp_path / "records" / RUN_NAME)
    assert {name for name in files_under(record.folder) if not name.startswith("tensorboard/")} == {
        "sacred/1/config.json", "sacred/1/run.json"}
    run_json = read_json(record.sacred / "1" / "run.json")
    assert run_json["status"] == "FAILED" and "TrainingDiverged" in "".join(run_json["fail_trace"])
    logged = read_scalar_events(record.tensorboard)
    assert [event.step for event in logged["loss/total"]] == [1, 2]  # the NaN step is not logged
    assert logged == read_scalar_events(run.tensorboard)
    with pytest.raises(SystemExit, match=r"no evaluated folds found.*fold 0 left out, its training failed"):
        summary_tables([str(tmp_path / "records" / "DEMO_setting1_psmnet")], ("dice",))


def test_training_failed_reads_the_last_train_call_not_a_later_failed_test(evaluated_runs, tmp_path):
    run = RunLayout(evaluated_runs / RUN_NAME)
    assert not run.training_failed()  # trained, then tested: both COMPLETED
    calls = {path.parent.name: read_json(path) for path in run.sacred.glob("*/run.json")}
    assert [calls[name]["command"] for name in sorted(calls)] == ["train", "test"]
    copy = RunLayout(tmp_path / RUN_NAME)
    for name, record in calls.items():
        write_json(record, copy.sacred / name / "run.json")
    write_json({**calls["2"], "status": "FAILED"}, copy.sacred / "3" / "run.json")  # a later test.py failed
    assert not copy.training_failed()
    write_json({**calls["1"], "status": "FAILED"}, copy.sacred / "9" / "run.json")  # a training resumed, failed
    assert copy.training_failed()
    write_json(calls["1"], copy.sacred / "10" / "run.json")  # resumed again and finished: 10 comes after 9
    assert not copy.training_failed()
