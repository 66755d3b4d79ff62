"""Offline conversion of the raw public downloads into the preprocessed layout (docs/PREPARING_DATA.md).

Run once per dataset by scripts/prepare_chaos.py, prepare_sabs.py and prepare_cmr.py; nothing at
training or test time imports this package (runtime data loading is dataloaders/).

- resampling.py: intensity clipping, label checks, resampling, crops, the CT body box, the MR pipeline;
- cases.py: the case loop (up-to-date checks, worker processes, atomic writes) and the shared
  command line of the prepare_* scripts.
"""
