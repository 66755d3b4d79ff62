"""SCP-Net against its original code (Medsemiseg/SCP-Net `code/networks/unet.py` Decoder_pro and its
helpers, `code/utils/losses.py`, `code/SCPNettrain.py`): the prototype maps, the vote's agreement and
the weighting of the cross-sample term restated here in loops, position by position; the network's
parameter count; one batch overfitted; other class counts; the named configs; train.py and test.py
end to end on a tiny ACDC folder."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from config import composed_config, ex
from dataloaders.acdc import PATIENTS_TO_SLICES
from experiment.config_checks import check_training_config
from models import build_semi_supervised_method
from models.losses import half_dice_loss
from models.scpnet import (PrototypeMaps, SCPNet, cross_sample_consistency, prototype_maps,
                           self_aware_consistency)
from test_semi_supervised import TINY_SIZE, tiny_run_config, write_tiny_acdc
from utils.checkpoint import load_checkpoint
from utils.io import read_json

# UNet_pro(in_chns=1, class_num=4), counted on the original's layer definitions (feature channels
# 32, 32, 64, 128, 256): encoder 9 696 + 18 624 + 55 680 + 221 952 + 886 272 = 1 192 224; decoder
# 476 032 + 119 232 + 29 920 + 28 896 + out_conv 1 156 = 655 236
UNET_PRO_PARAMETERS = 1_847_460
OUT_CONV_PARAMETERS_PER_CLASS = 32 * 3 * 3 + 1
AREA_EPS, NORMALIZE_EPS, LOG_EPS = 1e-5, 1e-12, 1e-6  # masked_average_pooling, F.normalize, entropy_value


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / max(vector.norm().item(), NORMALIZE_EPS)


def original_maps(features: torch.Tensor, probabilities: torch.Tensor) -> PrototypeMaps:
    """Decoder_pro's head restated one pixel at a time in float64: features (B, C, H, W),
    probabilities (B, K, H, W) -> its self map (softmaxed as both losses do), cross map, agreement."""
    features, probabilities = features.double(), probabilities.double()
    batch, n_classes, height, width = probabilities.shape
    prototypes = [[(features[b] * probabilities[b, k]).sum(dim=(1, 2)) / (probabilities[b, k].sum() + AREA_EPS)
                   for k in range(n_classes)] for b in range(batch)]
    self_map = torch.zeros(batch, n_classes, height, width, dtype=torch.float64)
    cross_map = torch.zeros_like(self_map)
    agreement = torch.zeros(batch, height, width, dtype=torch.float64)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                pixel = _unit(features[b, :, y, x])
                cosine = torch.tensor([[float(pixel @ _unit(prototypes[s][k])) for k in range(n_classes)]
                                       for s in range(batch)], dtype=torch.float64)  # (slices, classes)
                self_map[b, :, y, x] = torch.softmax(cosine[b], dim=0)  # selfsimilaritygen, then the losses' softmax
                others = sum(cosine[s].exp() for s in range(batch) if s != b)  # othersimilaritygen
                cross_map[b, :, y, x] = others / others.sum()
                votes = torch.zeros(n_classes, dtype=torch.float64)  # agreementmap: every slice votes, b included
                for s in range(batch):
                    votes[int(cosine[s].argmax())] += 1
                shares = votes / votes.sum()
                entropy = -float((shares * torch.log(shares + LOG_EPS)).sum()) / math.log(n_classes)
                agreement[b, y, x] = 1 - entropy
    return PrototypeMaps(self_map, cross_map, agreement)


def random_head_inputs(batch: int, channels: int, n_classes: int, size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, size, size, generator=generator)
    probabilities = torch.softmax(3 * torch.randn(batch, n_classes, size, size, generator=generator), dim=1)
    return features, probabilities


# --- the network -----------------------------------------------------------------------------------


def test_unet_pro_has_the_parameter_count_of_the_original():
    count = lambda n_classes: sum(p.numel() for p in SCPNet(1, n_classes).parameters())  # noqa: E731
    assert count(4) == UNET_PRO_PARAMETERS
    assert count(7) == UNET_PRO_PARAMETERS + 3 * OUT_CONV_PARAMETERS_PER_CLASS
    logits, features = SCPNet(1, 4).network.logits_and_features(torch.zeros(2, 1, 32, 48))
    assert logits.shape == (2, 4, 32, 48) and features.shape == (2, 32, 32, 48)


# --- the prototype head and the losses, restated -----------------------------------------------------


@pytest.mark.parametrize("batch, n_classes, seed", [(3, 3, 0), (4, 5, 1), (2, 4, 2)])
def test_prototype_maps_equal_the_original_position_by_position(batch, n_classes, seed):
    features, probabilities = random_head_inputs(batch, 5, n_classes, 4, seed)
    maps, expected = prototype_maps(features, probabilities), original_maps(features, probabilities)
    assert torch.allclose(maps.self_probabilities.double(), expected.self_probabilities, atol=1e-6)
    assert torch.allclose(maps.cross_probabilities.double(), expected.cross_probabilities, atol=1e-6)
    assert torch.allclose(maps.vote_agreement.double(), expected.vote_agreement, atol=1e-6)
    # random features split the votes somewhere: the agreement is not 1 everywhere
    assert expected.vote_agreement.min() < 0.9


def test_identical_slices_agree_and_see_their_own_map_across_the_batch():
    features, probabilities = random_head_inputs(1, 6, 3, 4, seed=3)
    maps = prototype_maps(features.expand(4, -1, -1, -1), probabilities.expand(4, -1, -1, -1))
    assert torch.allclose(maps.cross_probabilities, maps.self_probabilities, atol=1e-6)
    assert torch.allclose(maps.vote_agreement, torch.ones(4, 4, 4), atol=1e-5)  # one class has every vote


def test_prototype_maps_carry_no_gradient_and_need_two_slices():
    features, probabilities = random_head_inputs(2, 4, 3, 4, seed=4)
    maps = prototype_maps(features.requires_grad_(), probabilities.requires_grad_())
    assert not any(tensor.requires_grad for tensor in vars(maps).values())
    with pytest.raises(ValueError, match="at least 2 slices"):
        prototype_maps(features[:1], probabilities[:1])


def test_consistency_terms_weight_the_cross_sample_term_by_confidence_and_vote_entropy():
    """weight_self_pro_softmax_mse_loss and double_weight_cross_pro_softmax_mse_loss, averaged
    (torch.mean) over every slice, pixel and class."""
    features, head_probabilities = random_head_inputs(3, 5, 4, 4, seed=5)
    maps = prototype_maps(features, head_probabilities)
    probabilities = torch.softmax(torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(6)), dim=1)
    self_terms, cross_terms = [], []
    for b in range(3):
        for y in range(4):
            for x in range(4):
                confidence = float(maps.self_probabilities[b, :, y, x].max())
                entropy = 1 - float(maps.vote_agreement[b, y, x])  # the loss's `1 - entropy` of agreementmap's 1 - H
                for k in range(4):
                    self_terms.append(float(maps.self_probabilities[b, k, y, x] - probabilities[b, k, y, x]) ** 2)
                    cross_terms.append(entropy * confidence *
                                       float(maps.cross_probabilities[b, k, y, x] - probabilities[b, k, y, x]) ** 2)
    assert self_aware_consistency(maps, probabilities).item() == pytest.approx(sum(self_terms) / 192, rel=1e-5)
    assert cross_sample_consistency(maps, probabilities).item() == pytest.approx(sum(cross_terms) / 192, rel=1e-5)


def test_half_dice_loss_is_scpnet_dice_loss():
    generator = torch.Generator().manual_seed(7)
    probabilities = torch.softmax(torch.randn(2, 3, 6, 6, generator=generator), dim=1)
    labels = torch.randint(0, 3, (2, 6, 6), generator=generator)
    expected = 0.0
    for k in range(3):  # DiceLoss._dice_loss: 1 - intersection / union, no factor 2, smooth 1e-10
        score, target = probabilities[:, k], (labels == k).float()
        expected += 1 - (score * target).sum() / ((score * score).sum() + (target * target).sum() + 1e-10)
    assert half_dice_loss(probabilities, labels).item() == pytest.approx(expected.item() / 3, rel=1e-6)
    perfect = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert half_dice_loss(perfect, labels).item() == pytest.approx(0.5)


def test_a_step_sums_the_script_loss_with_its_ramp():
    """loss = (CE + Dice) / 2 + 0.1 x sigmoid_rampup(i // 150, 1000) x (self + cross) / 2 over all slices."""
    torch.manual_seed(0)
    method = SCPNet(1, 3).eval()  # eval: no dropout, so that the step and the restatement see the same logits
    images, labels = torch.rand(4, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    iteration = 39_999
    step = method.training_losses(images[:2], labels, images[2:], iteration)
    logits, features = method.network.logits_and_features(images)
    probabilities = torch.softmax(logits, dim=1)
    maps = prototype_maps(features, probabilities)
    weight = 0.1 * math.exp(-5 * (1 - (iteration // 150) / 1000) ** 2)
    assert weight == pytest.approx(0.00676, abs=1e-5)  # where the original's ramp-up ends, at 40k iterations
    expected = ((F.cross_entropy(logits[:2], labels) + half_dice_loss(probabilities[:2], labels)) / 2
                + weight * (self_aware_consistency(maps, probabilities) + cross_sample_consistency(maps, probabilities)) / 2)
    assert set(step.losses) == {"cross_entropy", "dice", "self_consistency", "cross_consistency"}
    assert sum(step.losses.values()).item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.scalars["consistency_weight"] == pytest.approx(weight)
    assert method.training_losses(images[:2], labels, images[2:], 0).scalars["consistency_weight"] == \
        pytest.approx(0.1 * math.exp(-5))


def test_without_prototype_consistency_only_the_supervised_terms_remain():
    method = build_semi_supervised_method("scpnet", 1, 3, prototype_consistency=False)
    step = method.training_losses(torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16)),
                                  torch.rand(2, 1, 16, 16), 39_999)
    assert set(step.losses) == {"cross_entropy", "dice"} and step.logits.shape == (4, 3, 16, 16)


# --- training -------------------------------------------------------------------------------------------


def test_scpnet_overfits_one_batch():
    torch.manual_seed(0)
    method = SCPNet(1, 3)
    images = torch.rand(4, 1, 32, 32) * 0.2
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 4:14, 4:14], labels[:, 18:28, 16:30] = 1, 2
    images[:2, 0] += 0.4 * labels
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-2)
    totals = []
    for _ in range(30):
        step = method.training_losses(images[:2], labels, images[2:], iteration=39_999)
        total = sum(step.losses.values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        totals.append(total.item())
    # 1 - Dice / 2 stays at 0.5 or above: the supervised term's floor is 0.5 x 0.5 = 0.25
    assert totals[0] > 0.8 and totals[-1] < 0.26 and step.losses["cross_entropy"].item() < 0.005
    # the last step's labelled logits (batch statistics: 30 steps leave the running ones behind)
    assert (step.logits[:2].argmax(dim=1) == labels).float().mean() > 0.99


@pytest.mark.parametrize("n_classes", [2, 7])
def test_scpnet_trains_with_other_class_counts(n_classes):
    """Seven classes: beyond the original's F.one_hot(score_map, 6)."""
    torch.manual_seed(n_classes)
    method = build_semi_supervised_method("scpnet", 1, n_classes)
    labels = torch.randint(0, n_classes, (2, 32, 32))
    step = method.training_losses(torch.rand(2, 1, 32, 32), labels, torch.rand(3, 1, 32, 32), 20_000)
    assert step.logits.shape == (5, n_classes, 32, 32)
    assert all(torch.isfinite(value) for value in step.losses.values())
    assert step.losses["self_consistency"].item() > 0 and step.losses["cross_consistency"].item() > 0
    assert 0.0 <= step.scalars["vote_agreement"] <= 1.0
    sum(step.losses.values()).backward()
    assert method.network.decoder.out_conv.weight.grad.abs().sum() > 0
    assert method.segment(torch.rand(1, 1, 32, 32)).shape == (1, n_classes, 32, 32)


# --- configs and train.py ---------------------------------------------------------------------------------


def test_scpnet_named_configs_are_the_script_defaults_and_run_under_the_cpu_profile():
    paper = composed_config(["acdc", "scpnet"])
    assert (paper["lr"], paper["n_steps"], paper["validate_every"], paper["image_size"]) == (0.1, 40_000, 100, 256)
    assert (paper["batch_size"], paper["labelled_batch_size"], paper["lr_schedule"]) == (24, 12, "poly")
    assert (paper["momentum"], paper["weight_decay"], paper["poly_power"]) == (0.9, 1e-4, 0.9)
    cpu = composed_config(["acdc", "scpnet", "cpu"], {"labelled_patients": 7})
    assert (cpu["lr"], cpu["n_steps"], cpu["image_size"], cpu["batch_size"]) == (0.1, 3000, 128, 8)
    assert (cpu["schedule_clock"], cpu["original_n_steps"]) == ("scaled", 40_000)
    check_training_config(cpu)
    ablation = composed_config(["acdc", "scpnet_no_consistency", "cpu"])
    assert ablation["model_options"] == {"prototype_consistency": False}
    assert ablation["model_label"] == "scpnet_no_consistency" and ablation["lr"] == 0.1
    # few-shot models keep their rates under `cpu` (moved from the named config to CPU_PROFILE)
    assert composed_config(["chaost2", "psmnet", "cpu"])["lr"] == 1e-2
    assert composed_config(["chaost2", "psmnet"])["lr"] == 1e-3


def test_scpnet_trains_and_test_scores_its_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)
    write_tiny_acdc(tmp_path / "data")
    config = tiny_run_config(tmp_path / "data", tmp_path / "runs", n_steps=4, validate_every=2)
    options = {"--loglevel": "ERROR"}
    ex.run("train", config_updates=config, named_configs=["acdc", "scpnet", "cpu"], options=options)
    result = ex.run("test", config_updates=config, named_configs=["acdc", "scpnet", "cpu"], options=options)
    run = tmp_path / "runs" / "ACDC_scpnet_labelled3_fold0"
    state = load_checkpoint(run / "checkpoints" / "last.pth")
    assert state["step"] == 4 and "network.decoder.out_conv.weight" in state["model"]
    assert state["model"]["network.encoder.in_conv.conv_conv.0.weight"].shape == (32, 1, 3, 3)
    summary = read_json(run / "evaluation_fold0" / "summary.json")
    assert summary["checkpoint"].endswith("best.pth") and set(summary["organs"]) == {"RV", "Myo", "LV"}
    assert summary["training_config"]["lr"] == 0.1 and summary["training_config"]["image_size"] == TINY_SIZE
    assert result.result == pytest.approx(summary["mean_dice"])
