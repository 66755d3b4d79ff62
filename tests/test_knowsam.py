"""KnowSAM (models/knowsam.py): its loss terms on hand-computed values, the prompt, fusion and SAM
shapes, SAM from the `segment-anything` package at the default size and at ViT-B size (a state dict
of the package's own ViT-B loading through sam_checkpoint), the patch exchange on a hand-made pair,
which losses reach which parameters, one batch overfitted, three classes, the named configs and the
two optimisers, train.py and test.py on a tiny ACDC folder."""
from __future__ import annotations

import math

import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from config import composed_config, ex
from dataloaders.acdc import PATIENTS_TO_SLICES
from experiment.config_checks import ConfigError, check_training_config
from experiment.optimisation import Optimisation
from models import build_semi_supervised_method, image_size_multiple
from models.knowsam import KnowSAM, KnowSAMOptions
from models.knowsam_losses import cross_consistency, distillation_loss, entropy_map, normalised_entropy
from models.patch_exchange import exchange_patches, most_certain_cells
from models.prediction_fusion import PredictionFusion
from models.prompted_sam import build_prompted_sam
from models.sam_adapters import AdapterBlock, AdapterTwoWayTransformer
from models.sam_builder import PROMPT_WIDTH, SamCheckpointError
from models.sam_prompts import LearnablePrompts
from test_semi_supervised import tiny_run_config, write_tiny_acdc
from utils.checkpoint import load_checkpoint
from utils.io import read_json

SIDE = 64  # the smallest side KnowSAM runs on: 4 x 4 SAM tokens, pooled twice by the prompt generators
# counted on the package's classes: ViT (4 blocks of 192 with adapters, 64 x 64 position embedding,
# neck) 3 502 912; prompt encoder 6 220; mask decoder with its transformer's adapters 4 223 780
SMALL_SAM_PARAMETERS = 7_732_912
VIT_B_SAM_PARAMETERS = 100_909_168  # the same with the ViT-B encoder (96 679 168)
PROMPT_PARAMETERS_PER_CLASS = 5_578_496  # one box-prompt generator at width 256, one box
NETWORK_PARAMETERS = 5_252_624  # U-Net 1 944 324 + V-Net 3 265 732 + fusion 42 568, one channel in, 4 classes


def _count(parameters) -> int:
    return sum(parameter.numel() for parameter in parameters)


def test_loss_terms_match_hand_computed_values():
    uniform = torch.full((1, 4, 2, 2), 0.25)
    assert entropy_map(uniform) == pytest.approx(torch.full((1, 1, 2, 2), math.log(4)), abs=1e-4)
    assert normalised_entropy(uniform).item() == pytest.approx(1.0, abs=1e-4)
    assert normalised_entropy(torch.eye(3)[None, :, :, None].expand(1, 3, 3, 2)).item() == pytest.approx(0, abs=1e-4)
    # teacher softmax at T = 10 is (0.75, 0.25), the student's (0.5, 0.5): KL x T^2
    temperature = 10.0
    teacher = torch.tensor([temperature * math.log(3.0), 0.0]).view(1, 2, 1, 1)
    expected = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) * temperature ** 2
    assert distillation_loss(torch.zeros(1, 2, 1, 1), teacher, temperature).item() == pytest.approx(expected, rel=1e-4)
    assert distillation_loss(teacher, teacher, temperature).item() == pytest.approx(0, abs=1e-5)
    # BCE of 0.8 against 0.5 in one class, of 0.2 against 0.5 in the other: both -0.5 (log 0.8 + log 0.2)
    probabilities, targets = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1), torch.full((1, 2, 1, 1), 0.5)
    assert cross_consistency(probabilities, targets).item() == pytest.approx(-0.5 * math.log(0.16), rel=1e-5)


def test_prompt_fusion_and_sam_shapes():
    batch, classes, boxes = 2, 4, 2
    embedding = torch.randn(batch, PROMPT_WIDTH, 4, 4)
    assert LearnablePrompts(classes, PROMPT_WIDTH, boxes)(embedding).shape == (batch, classes, 2 * boxes, PROMPT_WIDTH)
    fusion = PredictionFusion(classes)
    first, second = torch.randn(batch, classes, 32, 32), torch.randn(batch, classes, 32, 32)
    assert fusion(first, second).shape == (batch, classes, 32, 32)
    fusion.eval()  # the fused map reads where the networks disagree: swapping one network's output changes it
    assert not torch.allclose(fusion(first, second), fusion(first, first))
    sam = build_prompted_sam(classes, "small", boxes)
    images = torch.rand(batch, 1, SIDE, SIDE)
    assert sam.embed(images).shape == (batch, PROMPT_WIDTH, SIDE // 16, SIDE // 16)
    assert sam(images, torch.randn(batch, classes, SIDE, SIDE)).shape == (batch, classes, SIDE, SIDE)


def test_default_sam_is_the_packages_classes_at_the_small_size_and_trains_fully():
    method = KnowSAM(1, 4)
    sam = method.sam
    assert isinstance(sam.image_encoder, ImageEncoderViT) and isinstance(sam.prompt_encoder, PromptEncoder)
    assert isinstance(sam.mask_decoder, MaskDecoder)
    assert isinstance(sam.mask_decoder.transformer, AdapterTwoWayTransformer)
    assert len(sam.image_encoder.blocks) == 4 and all(isinstance(block, AdapterBlock) for block in sam.image_encoder.blocks)
    assert [block.window_size for block in sam.image_encoder.blocks] == [14, 0, 14, 0]
    assert _count(sam.parameters()) - _count(sam.prompts.parameters()) == SMALL_SAM_PARAMETERS
    assert _count(sam.prompts.parameters()) == 4 * PROMPT_PARAMETERS_PER_CLASS
    groups = method.optimised_parameters()
    assert _count(groups["networks"]) == NETWORK_PARAMETERS
    assert _count(groups["sam"]) == _count(sam.parameters())  # random weights: every SAM parameter trains


@pytest.mark.slow  # two ViT-B SAMs (94 M and 123 M parameters) and a 375 MB state dict on disk
def test_a_state_dict_of_the_packages_vit_b_loads_through_sam_checkpoint(tmp_path):
    package_sam = sam_model_registry["vit_b"]()
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(package_sam.state_dict(), path)
    sam = build_prompted_sam(2, "vit_b", 1, path)
    assert _count(sam.parameters()) - _count(sam.prompts.parameters()) == VIT_B_SAM_PARAMETERS
    for name in ("image_encoder.pos_embed", "image_encoder.blocks.11.attn.qkv.weight", "image_encoder.neck.0.weight",
                 "prompt_encoder.mask_downscaling.0.weight", "mask_decoder.transformer.layers.1.mlp.lin2.weight",
                 "mask_decoder.iou_token.weight"):
        assert torch.equal(sam.state_dict()[name], package_sam.state_dict()[name]), name
    trained = {name for name, parameter in sam.named_parameters() if parameter.requires_grad}
    assert trained and all("adapter" in name or name.startswith("prompts.") for name in trained)
    assert "mask_decoder.transformer.layers.0.space_adapter.down.weight" in trained
    images = torch.rand(2, 1, SIDE, SIDE)
    assert sam(images, torch.randn(2, 2, SIDE, SIDE)).shape == (2, 2, SIDE, SIDE)
    # the package's checkpoint does not fit the small SAM; the error names the file and the problem
    with pytest.raises(SamCheckpointError, match=r"sam_vit_b_01ec64\.pth does not fit .*shape mismatch"):
        build_prompted_sam(2, "small", 1, path)


def test_a_missing_or_unreadable_sam_checkpoint_is_refused_naming_the_file(tmp_path):
    with pytest.raises(SamCheckpointError, match=r"absent\.pth: no such file"):
        KnowSAM(1, 4, KnowSAMOptions(sam_size="vit_b", sam_checkpoint=str(tmp_path / "absent.pth")))
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(SamCheckpointError, match=r"notes\.pth: not a readable PyTorch state dict"):
        build_prompted_sam(4, "small", 1, tmp_path / "notes.pth")
    with pytest.raises(ValueError, match="sam_size must be one of"):
        KnowSAMOptions(sam_size="vit_h")


def test_patch_exchange_on_a_hand_made_pair():
    # 8 x 8 slices in a 4 x 4 grid of 2 x 2 cells; the labelled slice is certain in cells 0 and 5, the
    # unlabelled one in cells 10 and 15 (uniform elsewhere): two cells are exchanged each way
    grid, cells = 4, 2
    certain, uncertain = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    probabilities = uncertain.view(1, 2, 1, 1).repeat(2, 1, 8, 8)
    for slice_index, chosen in ((0, (0, 5)), (1, (10, 15))):
        for cell in chosen:
            row, column = divmod(cell, grid)
            probabilities[slice_index, :, 2 * row:2 * row + 2, 2 * column:2 * column + 2] = certain.view(2, 1, 1)
    expected_labelled_cells = torch.zeros(8, 8, dtype=torch.bool)
    expected_labelled_cells[0:2, 0:2] = expected_labelled_cells[2:4, 2:4] = True
    expected_unlabelled_cells = torch.zeros(8, 8, dtype=torch.bool)
    expected_unlabelled_cells[4:6, 4:6] = expected_unlabelled_cells[6:8, 6:8] = True
    assert torch.equal(most_certain_cells(probabilities, grid, cells)[0], expected_labelled_cells)
    labelled, unlabelled = torch.full((1, 1, 8, 8), 1.0), torch.full((1, 1, 8, 8), 2.0)
    labels, pseudo_labels = torch.full((1, 8, 8), 1), torch.full((1, 8, 8), 3)
    exchanged = exchange_patches(labelled, labels, unlabelled, pseudo_labels, probabilities, grid, cells)
    # the labelled slice takes the unlabelled slice's pixels (and pseudo-labels) at ITS most certain cells
    assert torch.equal(exchanged.images[0, 0], torch.where(expected_labelled_cells, 2.0, 1.0))
    assert torch.equal(exchanged.labels[0], torch.where(expected_labelled_cells, 3, 1))
    # the unlabelled slice takes the labelled slice's pixels (and labels) at its own most certain cells
    assert torch.equal(exchanged.images[1, 0], torch.where(expected_unlabelled_cells, 1.0, 2.0))
    assert torch.equal(exchanged.labels[1], torch.where(expected_unlabelled_cells, 1, 3))
    with pytest.raises(ValueError, match="pairs each labelled slice with an unlabelled one"):
        exchange_patches(labelled, labels, torch.cat([unlabelled, unlabelled]), pseudo_labels, probabilities, grid,
                         cells)


def _tiny_batch(n_classes: int, pairs: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`pairs` labelled and unlabelled 64 px slices, one square per foreground class."""
    images = torch.zeros(2 * pairs, 1, SIDE, SIDE)
    labels = torch.zeros(pairs, SIDE, SIDE, dtype=torch.long)
    for index in range(2 * pairs):
        for organ in range(1, n_classes):
            top, left = 6 + 14 * (organ - 1) + index, 8 + 10 * (organ - 1)
            images[index, 0, top:top + 12, left:left + 16] = organ / n_classes
            if index < pairs:
                labels[index, top:top + 12, left:left + 16] = organ
    return images[:pairs], labels, images[pairs:]


def test_sam_learns_from_labels_only_and_the_networks_from_sam_without_moving_it():
    torch.manual_seed(0)
    method = KnowSAM(1, 3, KnowSAMOptions(exchange_start=0))
    labelled, labels, unlabelled = _tiny_batch(3)
    step = method.training_losses(labelled, labels, unlabelled, iteration=1)  # past exchange_start: every term
    assert {"unet_exchanged", "vnet_exchanged", "fusion_exchanged"} <= set(step.losses)
    assert step.scalars["patch_exchange"] == 1.0 and step.logits.shape == (2, 3, SIDE, SIDE)
    network_terms = sum(value for name, value in step.losses.items() if name != "sam_supervised")
    groups = method.optimised_parameters()
    sam_gradients = torch.autograd.grad(network_terms, groups["sam"], allow_unused=True, retain_graph=True)
    assert all(gradient is None for gradient in sam_gradients)  # SAM is the networks' teacher, detached
    network_gradients = torch.autograd.grad(step.losses["sam_supervised"], groups["networks"], allow_unused=True,
                                            retain_graph=True)
    assert all(gradient is None for gradient in network_gradients)  # the fused prompt is detached
    # as the original's loss_diff2, the V-Net's consistency term has no gradient; symmetric gives it one
    assert not step.losses["vnet_consistency"].requires_grad and step.losses["unet_consistency"].requires_grad
    symmetric = KnowSAM(1, 3, KnowSAMOptions(symmetric_consistency=True))
    assert symmetric.training_losses(labelled, labels, unlabelled, iteration=0).losses["vnet_consistency"].requires_grad


def test_one_batch_is_overfitted():
    torch.manual_seed(0)
    method = KnowSAM(1, 3)
    labelled, labels, unlabelled = _tiny_batch(3)
    groups = method.optimised_parameters()
    optimiser = torch.optim.Adam([{"params": groups["networks"], "lr": 5e-3}, {"params": groups["sam"], "lr": 1e-4}])
    first = None
    for _ in range(8):
        step = method.training_losses(labelled, labels, unlabelled, iteration=0)
        first = first or {name: value.item() for name, value in step.losses.items()}
        optimiser.zero_grad()
        sum(step.losses.values()).backward()
        optimiser.step()
    assert step.losses["unet_supervised"].item() < 0.5 * first["unet_supervised"]
    assert step.losses["fusion_supervised"].item() < 0.7 * first["fusion_supervised"]
    prediction = step.logits[:1].argmax(dim=1)  # the fused map, the test-time output
    assert (prediction == labels).float().mean().item() > 0.9
    assert (prediction[labels > 0] == labels[labels > 0]).float().mean().item() > 0.9


@pytest.mark.parametrize("n_classes", [2, 5])
def test_class_counts_other_than_acdc_train_every_term(n_classes):
    torch.manual_seed(0)
    method = build_semi_supervised_method("knowsam", 1, n_classes, exchange_start=0)
    labelled, labels, unlabelled = _tiny_batch(n_classes, pairs=2)
    step = method.training_losses(labelled, labels, unlabelled, iteration=1)
    assert len(step.losses) == 13 and all(torch.isfinite(value) for value in step.losses.values())
    sum(step.losses.values()).backward()
    assert method.sam.prompts.generators[n_classes - 1].token_head[0].weight.grad.abs().sum() > 0
    assert method.fusion.head[-3].weight.grad.shape[0] == n_classes
    method.eval()
    assert method(labelled).shape == (2, n_classes, SIDE, SIDE)


def test_named_configs_and_the_two_optimisers():
    paper = composed_config(["acdc", "knowsam"])
    assert (paper["n_steps"], paper["batch_size"], paper["labelled_batch_size"], paper["image_size"]) == (
        50_000, 24, 12, 256)
    assert (paper["optimizer"], paper["lr"], paper["momentum"], paper["weight_decay"]) == ("sgd", 1e-2, 0.9, 1e-4)
    assert paper["poly_power"] == 1.0 and paper["model_label"] == "knowsam_small_sam"
    assert paper["group_optimizers"] == {"sam": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.0}}
    cpu = composed_config(["acdc", "knowsam", "cpu"], {"labelled_patients": 7})
    assert (cpu["n_steps"], cpu["batch_size"], cpu["image_size"], cpu["schedule_clock"]) == (3000, 8, 128, "scaled")
    check_training_config(cpu)
    vit_b = composed_config(["acdc", "knowsam", "sam_vit_b"])
    assert vit_b["model_options"] == {"sam_size": "vit_b", "sam_checkpoint": "sam_vit_b_01ec64.pth"}
    assert vit_b["model_label"] == "knowsam_vit_b"
    assert image_size_multiple("knowsam", {}) == SIDE
    with pytest.raises(ConfigError, match="positive multiple of 64"):
        check_training_config({**cpu, "image_size": 96})
    with pytest.raises(ConfigError, match=r"group_optimizers\['sam'\] sets \['betas'\]"):
        check_training_config({**cpu, "group_optimizers": {"sam": {"betas": (0.9, 0.99)}}})
    method = KnowSAM(1, 4)
    optimisation = Optimisation(cpu, method.optimised_parameters())
    networks, sam = optimisation.optimizers["networks"], optimisation.optimizers["sam"]
    assert isinstance(networks, torch.optim.SGD) and networks.defaults["lr"] == 1e-2
    assert networks.defaults["weight_decay"] == 1e-4
    assert isinstance(sam, torch.optim.AdamW) and sam.defaults["lr"] == 1e-4 and sam.defaults["weight_decay"] == 0.0
    with pytest.raises(ValueError, match=r"parameter group\(s\) \['teacher'\]"):
        Optimisation({**cpu, "group_optimizers": {"teacher": {"lr": 1.0}}}, method.optimised_parameters())


def test_knowsam_trains_and_test_scores_its_fused_map(tmp_path, monkeypatch):
    monkeypatch.setitem(PATIENTS_TO_SLICES, 3, 4)
    write_tiny_acdc(tmp_path / "data")
    config = tiny_run_config(tmp_path / "data", tmp_path / "runs", image_size=SIDE, n_steps=2, validate_every=2)
    options = {"--loglevel": "ERROR"}
    ex.run("train", config_updates=config, named_configs=["acdc", "knowsam", "cpu"], options=options)
    result = ex.run("test", config_updates=config, named_configs=["acdc", "knowsam", "cpu"], options=options)
    run = tmp_path / "runs" / "ACDC_knowsam_small_sam_labelled3_fold0"
    state = load_checkpoint(run / "checkpoints" / "last.pth")
    assert state["step"] == 2 and set(state["optimizer"]) == {"networks", "sam"}
    assert "sam.prompts.generators.3.token_head.0.weight" in state["model"]
    summary = read_json(run / "evaluation_fold0" / "summary.json")
    assert summary["checkpoint"].endswith("best.pth") and set(summary["organs"]) == {"RV", "Myo", "LV"}
    assert result.result == pytest.approx(summary["mean_dice"])
