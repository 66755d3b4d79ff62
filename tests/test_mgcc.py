"""MGCC against its original code (FengheTan9/Multi-Level-Global-Context-Cross-Consistency
`src/network/MGCC.py`, `src/utils/losses.py`, `train.py`): the parameter count from the original's
layer definitions, shapes, the perturbations on in training and off at test, the loss arithmetic
restated from the script on small tensors, one batch overfitted, other class counts, the named
config and train.py / test.py on a tiny ACDC folder."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from config import composed_config, ex
from dataloaders.acdc import PATIENTS_TO_SLICES
from experiment.config_checks import check_training_config
from models import build_semi_supervised_method, original_steps
from models.feature_perturbations import DROPOUT_RATE, FEATURE_NOISE_RANGE, dropout, feature_dropout, feature_noise
from models.mgcc import MGCC, MGCCOptions, mgcc_iterations
from test_semi_supervised import TINY_SIZE, tiny_run_config, write_tiny_acdc
from utils.checkpoint import load_checkpoint
from utils.io import read_json

ORIGINAL_PARAMETERS = 122_182_980  # MGCC(img_ch=3) of src/network/MGCC.py: dim_mult 4, one output map
SIZE = 32  # image side of the small tests (two poolings short of a 2 x 2 bottleneck)


def original_parameter_count(in_channels: int, first_channels: int, out_channels: int, depths=(3, 3, 3),
                             kernel_size: int = 7) -> int:
    """The original's parameters, layer by layer from its definitions (every conv with a bias)."""
    def conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
        return cin // groups * cout * k * k + cout

    def norm(channels: int) -> int:
        return 2 * channels

    def conv_block(cin: int, cout: int) -> int:  # conv3x3 BN ReLU conv3x3 BN ReLU
        return conv(cin, cout, 3) + norm(cout) + conv(cout, cout, 3) + norm(cout)

    def msag(c: int) -> int:  # pointwise, ordinary, dilated (each + BN), vote 3c -> c + BN
        return conv(c, c, 1) + conv(c, c, 3) + conv(c, c, 3) + 3 * norm(c) + conv(3 * c, c, 1) + norm(c)

    channels = [first_channels * multiplier for multiplier in (1, 2, 4, 8, 16)]
    encoder = sum(conv_block(cin, cout) for cin, cout in zip([in_channels] + channels[:-1], channels))
    mixer_layer = conv(channels[-1], channels[-1], kernel_size, groups=channels[-1]) + norm(channels[-1]) \
        + conv(channels[-1], channels[-1], 1) + norm(channels[-1])
    decoder = sum(conv(channels[s + 1], channels[s], 3) + norm(channels[s]) + conv_block(2 * channels[s], channels[s])
                  + msag(channels[s]) for s in range(4)) + conv(channels[0], out_channels, 1)
    return encoder + sum(depths) * mixer_layer + 4 * decoder


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


# --- the network ------------------------------------------------------------------------------------------


def test_full_width_has_the_parameter_count_of_the_original():
    assert original_parameter_count(3, 64, 1) == ORIGINAL_PARAMETERS
    with torch.device("meta"):  # 122 M parameters: counted without memory
        assert count(MGCC(3, 2)) == ORIGINAL_PARAMETERS
        assert count(MGCC(1, 4)) == original_parameter_count(1, 64, 4) == 122_182_608
    for width, first_channels in (("quarter", 16), ("eighth", 8)):
        assert count(MGCC(1, 4, MGCCOptions(width=width))) == original_parameter_count(1, first_channels, 4)
    assert count(MGCC(1, 4, MGCCOptions(width="eighth"))) == 1_974_856


def test_training_runs_four_decoders_and_test_time_the_main_one():
    torch.manual_seed(0)
    method = MGCC(1, 4, MGCCOptions(width="eighth"))
    images = torch.rand(3, 1, SIZE, SIZE)
    assert method.network.decoder_outputs(images).shape == (4, 3, 4, SIZE, SIZE)
    method.eval()
    assert method.segment(images).shape == (3, 4, SIZE, SIZE)
    binary = MGCC(1, 2, MGCCOptions(width="eighth")).eval()
    logits = binary.segment(images)  # the sigmoid map z as (0, z)
    assert logits.shape == (3, 2, SIZE, SIZE) and torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    with pytest.raises(ValueError, match="multiples of 16"):
        method.segment(torch.rand(1, 1, 40, 40))
    with pytest.raises(ValueError, match="two classes"):
        MGCC(1, 4, MGCCOptions(output="sigmoid"))
    with pytest.raises(ValueError, match="width must be one of"):
        MGCCOptions(width="half")


def test_perturbations_act_in_training_and_not_at_test_time():
    """With every auxiliary decoder a copy of the main one and batch norm frozen, the main output of
    `decoder_outputs` is the test-time output, and the auxiliary outputs (perturbed, from an earlier
    ConvMixer depth) differ from it; the test-time output has no randomness."""
    torch.manual_seed(0)
    method = MGCC(1, 2, MGCCOptions(width="eighth")).eval()
    for decoder in method.network.auxiliary_decoders:
        decoder.load_state_dict(method.network.main_decoder.state_dict())
    images = torch.rand(2, 1, SIZE, SIZE)
    outputs = method.network.decoder_outputs(images)
    assert torch.allclose(outputs[0], method.network(images), atol=1e-6)
    assert torch.equal(method.segment(images), method.segment(images))  # no randomness at test time
    assert all(not torch.allclose(outputs[0], auxiliary, atol=1e-4) for auxiliary in outputs[1:])


def test_feature_perturbations_follow_the_original():
    torch.manual_seed(0)
    features = torch.rand(2, 3, 4, 4) + 0.1
    dropped = feature_dropout(features)
    attention = features.mean(dim=1)  # (B, h, w)
    for image in range(2):  # the most activated position is dropped, the least kept
        kept = dropped[image].abs().sum(dim=0) > 0
        assert not kept.flatten()[attention[image].argmax()] and kept.flatten()[attention[image].argmin()]
        # kept exactly where the attention is below a threshold in [0.7, 0.9] x its maximum
        threshold_low, threshold_high = 0.7 * attention[image].max(), 0.9 * attention[image].max()
        assert kept[attention[image] < threshold_low].all() and not kept[attention[image] >= threshold_high].any()
    noisy = feature_noise(features)
    factor = noisy / features - 1  # the noise n of x + x n
    assert torch.allclose(factor[0], factor[1], atol=1e-6) and factor.abs().max() <= FEATURE_NOISE_RANGE
    large = torch.ones(200, 100)
    rate = (dropout(large) == 0).float().mean().item()
    assert abs(rate - DROPOUT_RATE) < 0.02 and dropout(large).max() == pytest.approx(1 / (1 - DROPOUT_RATE))


# --- the script's arithmetic, restated ---------------------------------------------------------------------


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """losses.BCEDiceLoss of the original, restated: input (N, 1, H, W) logits, target (N, 1, H, W)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probability = torch.sigmoid(logits).view(logits.shape[0], -1)
    target = target.view(target.shape[0], -1)
    dice = (2.0 * (probability * target).sum(1) + 1e-5) / (probability.sum(1) + target.sum(1) + 1e-5)
    return 0.5 * bce + (1 - dice.sum() / logits.shape[0])


def with_fixed_outputs(method: MGCC, outputs: torch.Tensor) -> MGCC:
    """The method with its network's four decoder outputs replaced by `outputs` (4, B, Cout, H, W)."""
    method.network.decoder_outputs = lambda images: outputs
    return method


def test_a_step_is_the_scripts_loss():
    torch.manual_seed(0)
    n_labelled, iteration = 2, 4_650  # unit 31 of the 200-unit ramp
    outputs = torch.randn(4, 5, 1, 8, 8)
    labels = (torch.rand(n_labelled, 8, 8) > 0.6).long()
    method = with_fixed_outputs(MGCC(1, 2, MGCCOptions(width="eighth")), outputs)
    step = method.training_losses(torch.zeros(2, 1, 8, 8), labels, torch.zeros(3, 1, 8, 8), iteration)
    target = labels.unsqueeze(1).float()
    supervised = sum(bce_dice_loss(outputs[d, :n_labelled], target) for d in range(4)) / 4
    soft = torch.sigmoid(outputs)
    consistency = sum(torch.mean((soft[0, n_labelled:] - soft[d, n_labelled:]) ** 2) for d in (1, 2, 3)) / 3
    weight = 7 * math.exp(-5 * (1 - (iteration // 150) / 200) ** 2)
    total = sum(step.losses.values())
    assert total.item() == pytest.approx((supervised + weight * consistency).item(), rel=1e-6)
    assert step.losses["consistency"].item() == pytest.approx(weight * consistency.item(), rel=1e-6)
    assert step.scalars["consistency_weight"] == pytest.approx(weight)
    assert step.logits.shape == (5, 2, 8, 8)


def test_softmax_with_two_classes_is_the_sigmoid_original_on_the_logit_difference():
    torch.manual_seed(1)
    logit_difference = torch.randn(4, 5, 1, 8, 8)
    labels = (torch.rand(2, 8, 8) > 0.5).long()
    arguments = (torch.zeros(2, 1, 8, 8), labels, torch.zeros(3, 1, 8, 8), 9_000)
    sigmoid = with_fixed_outputs(MGCC(1, 2, MGCCOptions(width="eighth")), logit_difference)
    two_maps = torch.cat([torch.zeros_like(logit_difference), logit_difference], dim=2) + 0.3  # shift: no change
    softmax = with_fixed_outputs(MGCC(1, 2, MGCCOptions(width="eighth", output="softmax")), two_maps)
    sigmoid_step, softmax_step = sigmoid.training_losses(*arguments), softmax.training_losses(*arguments)
    for term in ("cross_entropy", "dice", "consistency"):
        assert softmax_step.losses[term].item() == pytest.approx(sigmoid_step.losses[term].item(), rel=1e-5)


def test_consistency_is_zero_when_the_decoders_agree():
    outputs = torch.randn(1, 5, 3, 8, 8).expand(4, -1, -1, -1, -1)
    method = with_fixed_outputs(MGCC(1, 3, MGCCOptions(width="eighth")), outputs)
    step = method.training_losses(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long),
                                  torch.zeros(3, 1, 8, 8), 30_000)
    assert step.losses["consistency"].item() == 0.0 and step.scalars["consistency_weight"] == pytest.approx(7.0)


def test_iterations_follow_the_scripts_rule():
    assert mgcc_iterations(0.5) == 20_000 and mgcc_iterations(0.25) == 10_000
    assert original_steps("mgcc", 136 / 1312) == int(40_000 * 136 / 1312) and original_steps("mgcc") == 40_000
    with pytest.raises(ValueError, match="labelled share"):
        mgcc_iterations(0.0)


# --- training ------------------------------------------------------------------------------------------------


def test_mgcc_overfits_one_batch():
    torch.manual_seed(0)
    method = MGCC(1, 2, MGCCOptions(width="eighth"))
    images = torch.rand(4, 1, SIZE, SIZE) * 0.2
    labels = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    labels[0, 4:14, 4:20], labels[1, 16:28, 10:26] = 1, 1
    images[:2, 0] += 0.5 * labels
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-2)
    totals = []
    for _ in range(30):
        step = method.training_losses(images[:2], labels, images[2:], iteration=20_000)
        total = sum(step.losses.values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        totals.append(total.item())
    # the Dice term, averaged over four decoders three of which see perturbed features, falls last
    assert totals[0] > 0.8 and totals[-1] < 0.2 * totals[0] and step.losses["cross_entropy"].item() < 0.05
    assert (step.logits[:2].argmax(dim=1) == labels).float().mean() > 0.99


@pytest.mark.parametrize("n_classes", [3, 6])
def test_mgcc_trains_with_other_class_counts(n_classes):
    torch.manual_seed(n_classes)
    method = build_semi_supervised_method("mgcc", 1, n_classes, width="eighth")
    assert method.output == "softmax"
    labels = torch.randint(0, n_classes, (2, SIZE, SIZE))
    step = method.training_losses(torch.rand(2, 1, SIZE, SIZE), labels, torch.rand(2, 1, SIZE, SIZE), 10_000)
    assert step.logits.shape == (4, n_classes, SIZE, SIZE)
    assert all(torch.isfinite(value) and value.item() > 0 for value in step.losses.values())
    sum(step.losses.values()).backward()
    assert all(decoder.head.weight.grad.abs().sum() > 0
               for decoder in [method.network.main_decoder, *method.network.auxiliary_decoders])
    assert method.eval().segment(torch.rand(1, 1, SIZE, SIZE)).shape == (1, n_classes, SIZE, SIZE)


# --- configs and train.py ---------------------------------------------------------------------------------------


def test_mgcc_named_config_is_the_script_defaults_and_narrows_under_cpu():
    paper = composed_config(["acdc", "mgcc"], {"labelled_patients": 7})
    assert (paper["lr"], paper["lr_schedule"], paper["momentum"], paper["weight_decay"]) == (0.01, "poly", 0.9, 1e-4)
    assert (paper["batch_size"], paper["labelled_batch_size"], paper["model_options"]) == (8, 4, {})
    assert paper["n_steps"] == paper["original_n_steps"] == int(40_000 * 136 / 1312)
    cpu = composed_config(["acdc", "mgcc", "cpu"], {"labelled_patients": 7})
    assert cpu["model_options"] == {"width": "eighth"} and (cpu["image_size"], cpu["batch_size"]) == (128, 8)
    assert (cpu["n_steps"], cpu["schedule_clock"], cpu["original_n_steps"]) == (3000, "scaled", 4146)
    check_training_config(cpu)
    full = composed_config(["cpu", "acdc", "mgcc"], {"model_options": {"width": "full"}})
    assert full["model_options"] == {"width": "full"}


def test_mgcc_trains_and_test_scores_its_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)
    write_tiny_acdc(tmp_path / "data")
    config = tiny_run_config(tmp_path / "data", tmp_path / "runs", n_steps=2, validate_every=2, checkpoint_every=2)
    options = {"--loglevel": "ERROR"}
    ex.run("train", config_updates=config, named_configs=["acdc", "mgcc", "cpu"], options=options)
    result = ex.run("test", config_updates=config, named_configs=["acdc", "mgcc", "cpu"], options=options)
    run = tmp_path / "runs" / "ACDC_mgcc_labelled3_fold0"
    state = load_checkpoint(run / "checkpoints" / "last.pth")
    assert state["step"] == 2 and state["model"]["network.main_decoder.head.weight"].shape == (4, 8, 1, 1)
    summary = read_json(run / "evaluation_fold0" / "summary.json")
    assert summary["checkpoint"].endswith("best.pth") and set(summary["organs"]) == {"RV", "Myo", "LV"}
    assert np.isfinite(summary["mean_dice"]) and result.result == pytest.approx(summary["mean_dice"])
