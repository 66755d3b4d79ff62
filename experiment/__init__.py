"""One experiment assembly for train.py, test.py, the scripts and the benches.

- layout.py: the run folder (checkpoints, tensorboard, Sacred record, evaluations) and run names;
- config_checks.py: every config value that could stop a run later, checked before anything is built;
- provenance.py: an evaluation bound to its checkpoint (its run folder, its training config, the
  provenance in summary.json) and the fold rows of summarize_folds;
- assembly.py: from a composed config dict to a fold's data, its training, validation and test
  episodes, and a model, new or rebuilt from a checkpoint;
- training_step.py: the losses of one training step (shared by train.py and the benches), and
  whether the step is skipped (an episode the model's original cannot score);
- curves.py: the learning curves a run logged (tensorboard tags written and read).
- sweep.py: the runs of a table (rows x folds x seeds) and the workers or Slurm jobs they run in.

Nothing here reads Sacred: it takes the plain dict that config.py composes.
"""
