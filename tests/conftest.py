"""What several test files share: a tiny DEMO dataset and the config of tiny runs on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from dataloaders.demo_data import write_demo_dataset
from dataloaders.specs import get_spec

TINY_IMAGE_SIZE = 64
DEMO_SLICE_SIZE = 64


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A DEMO dataset at 64 x 64 in-plane (every scan the spec lists), with its superpixels."""
    root = tmp_path_factory.mktemp("data")
    write_demo_dataset(root / "DEMO", n_scans=len(get_spec("DEMO").scan_ids), seed=0, size=DEMO_SLICE_SIZE)
    return root


def tiny_config(data_root: Path, runs_root: Path, **overrides) -> dict:
    """Config updates (on top of `demo cpu`) for runs of a few steps at 64 px with a ResNet-18."""
    config = dict(
        data_root=str(data_root), runs_root=str(runs_root), image_size=TINY_IMAGE_SIZE, n_steps=4,
        log_every=1, checkpoint_every=2, validate_every=2, n_validation_scans=1, min_superpixel_area=16,
        model=dict(encoder="resnet18"),
    )
    config.update(overrides)
    return config


def command_line_arguments(config: dict) -> list[str]:
    """A `tiny_config` as train.py's command-line updates."""
    return [f"{key}={value!r}" for key, value in config.items() if key != "model"] + ["model.encoder=resnet18"]
