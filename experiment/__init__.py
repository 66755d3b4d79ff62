"""One experiment assembly for train.py, test.py, the scripts and the benches.

- layout.py: the run folder (checkpoints, tensorboard, Sacred record, evaluations) and run names;
- assembly.py: from a composed config dict to a fold's data, its training, validation and test
  episodes, and a model, new or rebuilt from a checkpoint;
- training_step.py: the losses of one training step (shared by train.py and the benches);
- curves.py: the learning curves a run logged (tensorboard tags written and read).

Nothing here reads Sacred: it takes the plain dict that config.py composes.
"""
