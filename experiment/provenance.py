"""What ties an evaluation to the checkpoint it scored (docs/DESIGN.md, "Evaluation provenance").

- `evaluation_run`: an evaluation is written into the run folder of its checkpoint, never into
  another run's;
- `bind_to_checkpoint`: test.py evaluates with the dataset, setting, label group and fold the
  checkpoint was trained with; a request that contradicts them is refused unless
  `allow_config_mismatch=True`, which is then recorded;
- `evaluation_options`, `protocol_departures`: every option that changes what is scored (the
  few-shot test episodes' n_parts, z_margin, support_choice, n_support_slices; the semi-supervised
  metric_rules, scored_slices and postprocessing; the evaluated data's fingerprint), and those away
  from the protocol's values, which name an evaluation folder of its own (`RunLayout.evaluation`)
  instead of the protocol's;
- `evaluation_provenance`: what summary.json records of the checkpoint (path, SHA-256, step,
  model, training config) and of the evaluation (dataset, fold, setting, label group, overrides,
  evaluation options, data);
- `check_fold_row`: summarize_folds puts in one table row only evaluations of one model trained
  with one config, folds apart, evaluated with the same options.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

from experiment.config_checks import ConfigError
from experiment.layout import BEST_CHECKPOINT_NAME, RunLayout
from models import SEMI_SUPERVISED

logger = logging.getLogger(__name__)

# Config keys that do not change what a run learns or which scans it sees: where files are, how
# often it logs, checkpoints and validates, what test.py writes, how many support slices evaluation
# uses (the support-size curve evaluates trained folds again with another n_support_slices). Runs
# that differ only in these are the same experiment.
BOOKKEEPING_KEYS = frozenset({
    "resume", "num_workers", "log_every", "checkpoint_every", "validate_every", "device", "eval_batch_size",
    "checkpoint", "save_predictions", "save_overlays", "metrics", "data_root", "derived_root", "runs_root",
    "run_name", "allow_config_mismatch", "n_support_slices",
    # what test.py scores, which training never reads (semi-supervised validation applies neither: it
    # scores every slice, as SSL4MIS; configs of earlier versions lack them)
    "scored_slices", "postprocessing",
    # names the run folder and its table row; training never reads it (a run extended to more steps
    # resumes under a new label, scripts/extend_runs.py)
    "model_label",
    # keys that only choose the default of another key, which every config records resolved and which
    # is compared itself (learning_rates -> lr; profile -> n_steps, image_size, ...; the model's name ->
    # track, original_n_steps; configs of earlier versions lack them)
    "learning_rates", "profile", "track", "original_n_steps",
})
# what test.py takes from the checkpoint's training config rather than from the request
BOUND_KEYS = ("dataset", "setting", "label_group", "eval_fold")
OVERRIDE_KEY = "allow_config_mismatch"
TRAINING_CONFIG_KEY = "training_config"
MISMATCH_KEY = "config_mismatch"
EVALUATION_OPTIONS_KEY = "evaluation_options"
DATA_KEY = "data"  # summary.json: the evaluated data's fingerprint (experiment/data_identity.py)
DATA_SHA256_KEY = "data_sha256"  # evaluation option: the evaluated data's content digest
# the config keys that change what an evaluation scores, per track (docs/PROTOCOL.md)
FEW_SHOT_EVALUATION_KEYS = ("n_parts", "z_margin", "support_choice", "n_support_slices")
SEMI_SUPERVISED_EVALUATION_KEYS = ("metric_rules", "scored_slices", "postprocessing")
# the protocol's values of the evaluation options that do not follow the training config
# (support_choice and the data do: the protocol evaluates as the checkpoint was trained);
# n_support_slices is named by the folder's _support<N> and read by the support-size tables
PROTOCOL_EVALUATION = {"n_parts": 3, "z_margin": 0, "metric_rules": "ssl4mis", "scored_slices": "volume",
                       "postprocessing": "none"}
# evaluation options recorded since, at the value every evaluation written before them had
EARLIER_EVALUATION_OPTIONS = {"postprocessing": "none"}
DATA_SUFFIX_DIGITS = 12  # of the data's digest, in the folder name of an evaluation on other data


class ProvenanceError(ValueError):
    """Scores would be written to, or tabulated as, a run they do not belong to."""


def evaluation_run(checkpoint: Path, config: dict) -> RunLayout:
    """The run folder the evaluation of `checkpoint` goes to: the checkpoint's own run.

    Refused when the checkpoint lies outside a run folder, or when `run_name` names another run.
    """
    owner = RunLayout.of_checkpoint(checkpoint)
    if owner is None:
        raise ProvenanceError(
            f"{checkpoint}: not inside a run folder (<runs_root>/<run_name>/checkpoints/<name>.pth), so its "
            f"evaluation has no run to live in; copy it into the checkpoints/ folder of a run of its own and pass "
            f"that path")
    requested = RunLayout.of(config)
    if config["run_name"] is not None and requested.folder.resolve() != owner.folder.resolve():
        raise ProvenanceError(
            f"{checkpoint} belongs to run {owner.folder}, but run_name={config['run_name']!r} names run "
            f"{requested.folder}: its scores would be written into another run's folder; drop run_name (the "
            f"evaluation then goes to {owner.folder}) or pass that run's own checkpoint")
    return owner


def bind_to_checkpoint(trained: dict, requested: dict, explicit: Collection[str],
                       checkpoint: Path) -> tuple[dict, dict]:
    """The config to evaluate with, and the mismatches allowed: {key: {"trained": .., "evaluated": ..}}.

    Each of BOUND_KEYS takes the checkpoint's training value, unless the request set it
    (`explicit`: the keys the command line or named configs changed) to another value: that is
    refused, or with `allow_config_mismatch=True` evaluated as requested, with a warning.
    """
    evaluated = dict(requested)
    mismatches = {}
    for key in BOUND_KEYS:
        if key in explicit and requested[key] != trained[key]:
            mismatches[key] = {"trained": trained[key], "evaluated": requested[key]}
        else:
            evaluated[key] = trained[key]
    if not mismatches:
        return evaluated, {}
    details = "; ".join(_describe_mismatch(key, values) for key, values in mismatches.items())
    if not requested[OVERRIDE_KEY]:
        raise ConfigError(f"{checkpoint}: the request contradicts the checkpoint's training config ({details}); "
                          f"drop the key to evaluate as trained, or pass {OVERRIDE_KEY}=True to evaluate anyway "
                          f"(recorded in summary.json)")
    logger.warning("%s: evaluating against the checkpoint's training config (%s), as %s=True asks", checkpoint,
                   details, OVERRIDE_KEY)
    return evaluated, mismatches


def _describe_mismatch(key: str, values: dict) -> str:
    text = f"{key}: requested {values['evaluated']!r}, trained with {values['trained']!r}"
    if key == "eval_fold":
        text += f" (fold {values['evaluated']}'s query scans were among its training scans)"
    return text


def evaluation_options(evaluated: dict, data: dict | None) -> dict:
    """{option: value} of every option of `evaluated` that changes what its track's evaluation
    scores, and `data_sha256`: the content digest of the evaluated data (`data`: its fingerprint;
    None leaves it out, for a caller that only names the folder of the config's evaluation)."""
    keys = SEMI_SUPERVISED_EVALUATION_KEYS if evaluated["track"] == SEMI_SUPERVISED else FEW_SHOT_EVALUATION_KEYS
    return {**{key: evaluated[key] for key in keys}, **({DATA_SHA256_KEY: data["sha256"]} if data else {})}


def protocol_departures(options: dict, trained: dict, trained_data: dict | None) -> dict:
    """{option: value} of the `options` that differ from the protocol's, as `RunLayout.evaluation`
    names them: n_parts 3, z_margin 0, metric_rules "ssl4mis", scored_slices "volume", postprocessing
    "none", support_choice as trained, the data as trained (`trained_data`: the checkpoint's
    fingerprint). What a checkpoint of an earlier version does not record (its data's fingerprint,
    its support_choice) counts as the same."""
    protocol = {**PROTOCOL_EVALUATION, "support_choice": trained.get("support_choice", options.get("support_choice")),
                DATA_SHA256_KEY: trained_data["sha256"] if trained_data else options.get(DATA_SHA256_KEY)}
    departures = {key: value for key, value in options.items() if key in protocol and value != protocol[key]}
    if DATA_SHA256_KEY in departures:
        departures[DATA_SHA256_KEY] = departures[DATA_SHA256_KEY][:DATA_SUFFIX_DIGITS]
    return departures


def evaluation_provenance(checkpoint: Path, step: int, trained: dict, evaluated: dict, mismatches: dict, *,
                          checkpoint_sha256: str, options: dict | None = None, data: dict | None = None) -> dict:
    """The summary.json fields that say what was scored: the evaluated dataset, fold, setting and
    label group, the support slices per scan and chunk, the checkpoint (path, SHA-256, step), its
    model and full training config, any mismatch that `allow_config_mismatch` let through, the
    evaluation options (`evaluation_options`) and the evaluated data's fingerprint (`data`).

    checkpoint_sha256: the SHA-256 of the bytes the scored model was loaded from
    (`utils.checkpoint.FILE_SHA256_KEY` of `load_checkpoint`'s result), never of the file read
    again, which may have been replaced since (a training still running writes last.pth)."""
    return {
        **{key: evaluated[key] for key in BOUND_KEYS},
        "n_support_slices": evaluated["n_support_slices"],
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "step": step,
        "model_name": trained["model"]["name"],
        "model_label": trained.get("model_label") or trained["model"]["name"],
        OVERRIDE_KEY: bool(evaluated[OVERRIDE_KEY]),
        MISMATCH_KEY: mismatches,
        TRAINING_CONFIG_KEY: trained,
        **({EVALUATION_OPTIONS_KEY: options} if options is not None else {}),
        **({DATA_KEY: data} if data is not None else {}),
    }


@dataclass(frozen=True)
class FoldEvaluation:
    """One fold's summary.json in a table row: the run prefix it was found under, its fold, its path."""

    prefix: str
    fold: int
    path: Path
    summary: dict


def check_fold_row(row: str, evaluations: Sequence[FoldEvaluation]) -> None:
    """Refuse a table row whose evaluations are not one model trained with one config, folds apart.

    Prefixes joined by '+' (Setting 2: one run per organ group) may differ in `label_group` too.
    Evaluations with different `evaluation_options` (n_parts, z_margin, ..., the data) are refused, as
    are checkpoints of different steps unless each was selected by validation (best.pth).
    Summaries written before evaluations recorded their training config, or their evaluation
    options, are accepted with a warning.
    """
    unchecked = [evaluation for evaluation in evaluations if TRAINING_CONFIG_KEY not in evaluation.summary]
    for evaluation in unchecked:
        logger.warning("%s: written before evaluations recorded their training config; not checked against "
                       "the rest of row %s", evaluation.path, row)
    checked = [evaluation for evaluation in evaluations if TRAINING_CONFIG_KEY in evaluation.summary]
    for evaluation in checked:
        if evaluation.summary.get(MISMATCH_KEY):
            details = "; ".join(_describe_mismatch(key, values)
                                for key, values in evaluation.summary[MISMATCH_KEY].items())
            raise ProvenanceError(f"{evaluation.path}: evaluated with {OVERRIDE_KEY}=True ({details}), not as the "
                                  f"protocol evaluates; evaluate the run again without it to put it in a fold table")
        trained_fold = evaluation.summary[TRAINING_CONFIG_KEY]["eval_fold"]
        if trained_fold != evaluation.fold:
            raise ProvenanceError(f"{evaluation.path}: its checkpoint was trained on fold {trained_fold}, but its run "
                                  f"folder is fold {evaluation.fold} of {evaluation.prefix}")
    joins_groups = len({evaluation.prefix for evaluation in evaluations}) > 1
    varying = BOOKKEEPING_KEYS | {"eval_fold"} | ({"label_group"} if joins_groups else set())
    for first, other in zip(checked, checked[1:]):
        first_config, other_config = first.summary[TRAINING_CONFIG_KEY], other.summary[TRAINING_CONFIG_KEY]
        differing = sorted(key for key in first_config.keys() | other_config.keys()
                           if key not in varying and first_config.get(key) != other_config.get(key))
        if differing:
            key = differing[0]
            raise ProvenanceError(
                f"{row}: {first.path} and {other.path} were trained with different {key} "
                f"({first_config.get(key)!r} vs {other_config.get(key)!r}; all differing keys: {differing}); one row "
                f"holds one model trained with one config, folds apart")
        if first.summary["step"] != other.summary["step"] and not (_selected_by_validation(first)
                                                                     and _selected_by_validation(other)):
            raise ProvenanceError(f"{row}: {first.path} and {other.path} evaluate checkpoints of different training "
                                  f"steps ({first.summary['step']} vs {other.summary['step']})")
    _check_same_evaluation_options(row, evaluations)


def _selected_by_validation(evaluation: FoldEvaluation) -> bool:
    """Whether the evaluation scored a best-validation checkpoint (the semi-supervised track's model
    selection), whose step is each fold's own and differs between folds trained alike."""
    return Path(evaluation.summary.get("checkpoint", "")).name == BEST_CHECKPOINT_NAME


def _check_same_evaluation_options(row: str, evaluations: Sequence[FoldEvaluation]) -> None:
    for evaluation in evaluations:
        if TRAINING_CONFIG_KEY in evaluation.summary and EVALUATION_OPTIONS_KEY not in evaluation.summary:
            logger.warning("%s: written before evaluations recorded their evaluation options (n_parts, z_margin, "
                           "data, ...); not checked against the rest of row %s", evaluation.path, row)
    recorded = [evaluation for evaluation in evaluations if EVALUATION_OPTIONS_KEY in evaluation.summary]
    for first, other in zip(recorded, recorded[1:]):
        first_options, other_options = ({**EARLIER_EVALUATION_OPTIONS, **evaluation.summary[EVALUATION_OPTIONS_KEY]}
                                        for evaluation in (first, other))
        differing = sorted(key for key in first_options.keys() | other_options.keys()
                           if first_options.get(key) != other_options.get(key))
        if differing:
            key = differing[0]
            raise ProvenanceError(
                f"{row}: {first.path} and {other.path} were evaluated with different {key} "
                f"({first_options.get(key)!r} vs {other_options.get(key)!r}; all differing evaluation options: "
                f"{differing}); one row holds evaluations made one way")
