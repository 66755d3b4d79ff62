"""A run name is one folder inside runs_root: `run_name=../x` or an absolute path is refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from config import composed_config
from experiment.config_checks import ConfigError, check_evaluation_config, check_run_name_config
from experiment.layout import RunLayout

ESCAPING_NAMES = ["../x", "..", ".", "/tmp/x", "a/b", "x/../../y"]


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory) -> dict:
    return composed_config(["demo", "cpu"], {"runs_root": str(tmp_path_factory.mktemp("runs"))})


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_a_run_name_that_is_not_one_folder_is_refused_by_the_layout(demo_config, name):
    with pytest.raises(ValueError, match="expected one folder name inside runs_root"):
        RunLayout.of({**demo_config, "run_name": name})
    with pytest.raises(ValueError, match="expected one folder name inside runs_root"):
        composed_config(["demo", "cpu"], {"run_name": name})  # the run observer's folder is refused too


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_a_run_name_that_is_not_one_folder_is_refused_by_the_config_checks(demo_config, name):
    config = {**demo_config, "run_name": name}
    with pytest.raises(ConfigError, match=r"config: run_name=.*expected one folder name inside runs_root"):
        check_evaluation_config(config)


def test_a_model_label_with_a_slash_is_refused_and_plain_names_pass(demo_config):
    with pytest.raises(ConfigError, match=r"model_label='psmnet/../../x'"):
        check_run_name_config({"run_name": None, "model_label": "psmnet/../../x"})
    config = {**demo_config, "run_name": "my_run-2.b"}
    check_evaluation_config(config)
    assert RunLayout.of(config).folder == Path(demo_config["runs_root"]) / "my_run-2.b"
    check_run_name_config({"run_name": None, "model_label": None})
