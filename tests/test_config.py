"""The composed Sacred config: the originals' per-model values, order-independent profiles, fp32,
COCO weights in the paper's configuration and a clear, immediate stop when they are missing; values
out of range refused before step 1 with their range."""
import urllib.error

import pytest
import torch

import train as train_script  # noqa: F401  (registers the "train" main)
from config import ex
from experiment.config_checks import ConfigError, check_training_config
from models.encoder import PretrainedWeightsError


def composed(*named_configs, **updates) -> dict:
    return ex.run("resolved_config", config_updates=updates, named_configs=list(named_configs),
                  options={"--loglevel": "ERROR"}).result


@pytest.mark.parametrize("model,steps,alignment", [("psmnet", 50_000, 0.0), ("psm_only", 50_000, 0.0),
                                                   ("alpnet", 100_000, 1.0), ("panet", 100_000, 1.0)])
def test_the_paper_configuration_trains_each_model_as_its_original_code(model, steps, alignment):
    config = composed("chaost2", model)
    assert config["n_steps"] == steps and config["alignment_loss_weight"] == alignment
    assert config["precision"] == "fp32" and config["class_weights"] == [0.05, 1.0]
    assert config["model"]["encoder"] == "resnet101" and config["model"]["pretrained"] == "COCO_WITH_VOC_LABELS_V1"


@pytest.mark.parametrize("order", [("psmnet", "cpu"), ("cpu", "psmnet"), ("cpu", "alpnet"), ("alpnet", "cpu")])
def test_the_cpu_profile_is_the_same_recipe_for_every_model_in_any_order(order):
    config = composed("demo", *order)
    assert config["n_steps"] == 3000 and config["alignment_loss_weight"] == 1.0
    assert config["loss_recipe"] == "with_alignment" and config["class_weights"] == [1.0, 1.0]
    assert config["model"]["pretrained"] is None and config["precision"] == "fp32"


def test_the_demo_schedule_shortens_the_cpu_profile_and_lowers_the_background_weight():
    config = composed("demo", "cpu", "quick")
    assert (config["n_steps"], config["warmup_steps"], config["lr_decay"], config["lr_decay_every"]) == (450, 25, 0.5, 110)
    assert config["lr"] == 1e-2 and config["class_weights"] == [0.75, 1.0] and config["alignment_loss_weight"] == 1.0
    check_training_config(config)


@pytest.mark.parametrize("order", [("universeg", "cpu"), ("cpu", "universeg")])
def test_universeg_keeps_its_adam_rate_under_the_cpu_profile_in_any_order(order):
    # the cpu profile raises SGD's rate to 1e-2, at which UniverSeg diverges (docs/METHOD.md "UniverSeg")
    config = composed("chaost2", "setting1", *order)
    assert (config["optimizer"], config["lr"]) == ("adamw", 1e-4)
    assert (config["image_size"], config["alignment_loss_weight"], config["dice_loss_weight"]) == (128, 0.0, 1.0)
    check_training_config(config)
    assert (composed("chaost2", "cpu", "psmnet")["optimizer"], composed("chaost2", "cpu", "psmnet")["lr"]) == ("sgd", 1e-2)
    assert composed("chaost2", "universeg")["lr"] == 1e-4 and composed("chaost2", "psmnet")["lr"] == 1e-3


def test_an_explicit_learning_rate_or_optimizer_overrides_the_models_own():
    assert composed("demo", "cpu", "universeg", lr=3e-3)["lr"] == 3e-3
    config = composed("demo", "cpu", "psmnet", optimizer="adamw")
    assert (config["optimizer"], config["lr"]) == ("adamw", 1e-4)
    assert composed("demo", "cpu", "universeg", optimizer="sgd")["lr"] == 1e-2


def test_an_explicit_alignment_weight_overrides_the_recipe():
    assert composed("psmnet", alignment_loss_weight=0.5)["alignment_loss_weight"] == 0.5
    assert composed("alpnet", loss_recipe="original", n_steps=10)["n_steps"] == 10


def test_missing_coco_weights_stop_training_before_any_data_is_read(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(PretrainedWeightsError, match=r"model\.pretrained=None") as error:
        ex.run("train", config_updates=dict(data_root=str(tmp_path / "no_data"), runs_root=str(tmp_path / "runs")),
               named_configs=["chaost2", "psmnet"], options={"--loglevel": "ERROR"})
    assert "COCO_WITH_VOC_LABELS_V1" in str(error.value) and "local .pth" in str(error.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pth"))


@pytest.mark.parametrize("updates,message", [
    (dict(n_validation_scans=0), r"n_validation_scans=0 is out of range: expected 1\.\.7 \(the training scans of DEMO "
                                 r"fold 0\) while validate_every=500; validate_every=0"),
    (dict(n_validation_scans=8), r"n_validation_scans=8 is out of range: expected 1\.\.7"),
    (dict(checkpoint_every=0), r"checkpoint_every=0 is out of range: expected an integer >= 1"),
    (dict(validate_every=-1), r"validate_every=-1 is out of range: expected an integer >= 0 \(0: never validate\)"),
    (dict(n_steps=0), r"n_steps=0 is out of range: expected an integer >= 1"),
    (dict(batch_size=0), r"batch_size=0 is out of range"),
    (dict(eval_batch_size=0), r"eval_batch_size=0 is out of range"),
    (dict(lr_decay_every=0), r"lr_decay_every=0 is out of range"),
    (dict(log_every=2.5), r"log_every=2\.5 is out of range: expected an integer >= 1"),
    (dict(lr=0.0), r"lr=0\.0 is out of range: expected a number > 0"),
    (dict(warmup_steps=-1), r"warmup_steps=-1 is out of range: expected an integer >= 0 \(0: no warm-up\)"),
    (dict(optimizer="adam"), r"optimizer='adam'.*sgd.*adamw"),
    (dict(class_weights=[1.0]), r"class_weights=\[1\.0\]: expected 2 numbers >= 0"),
    (dict(image_size=24), r"image_size=24 is out of range: expected None or an integer >= 32 \(output_stride 8 x "
                          r"the 4 x 4 feature grid that alpnet needs\)"),
])
def test_a_config_value_that_would_stop_a_run_later_is_refused_with_its_range(updates, message):
    with pytest.raises(ConfigError, match=message):
        check_training_config(composed("demo", "cpu", "alpnet", **updates))


def test_the_protocol_configs_pass_the_checks_and_small_images_suit_models_without_windows():
    for named_configs in [("chaost2", "psmnet"), ("chaost2", "alpnet"), ("sabs", "setting2", "panet"),
                          ("demo", "cpu", "psm_only")]:
        check_training_config(composed(*named_configs))
    check_training_config(composed("demo", "cpu", "panet", image_size=24))  # 3 x 3 features suit PANet
    with pytest.raises(ConfigError, match="4 x 4 feature grid that psmnet needs"):  # its background windows
        check_training_config(composed("demo", "cpu", "psmnet", image_size=24))
    check_training_config(composed("demo", "cpu", "psmnet", image_size=24,
                                   model_options=dict(use_local_background_prototypes=False)))
    check_training_config(composed("demo", "cpu", "alpnet", validate_every=0, n_validation_scans=0))


def test_train_refuses_a_value_out_of_range_before_it_writes_anything(tmp_path):
    with pytest.raises(ConfigError, match="n_validation_scans=0"):
        ex.run("train", config_updates=dict(data_root=str(tmp_path / "no_data"), runs_root=str(tmp_path / "runs"),
                                            n_validation_scans=0),
               named_configs=["demo", "cpu"], options={"--loglevel": "ERROR"})
    assert not any((tmp_path / "runs").rglob("*.pth"))


def test_sacred_still_warns_about_type_changes_except_the_intended_weights_none(caplog):
    with caplog.at_level("WARNING"):
        ex.run("resolved_config", config_updates={"log_every": "20"}, named_configs=["demo", "cpu", "psmnet"],
               options={"--loglevel": "WARNING"})
    messages = [record.getMessage() for record in caplog.records]
    assert any('config entry "log_every" from int to str' in message for message in messages)
    assert not any("model.pretrained" in message for message in messages)
