"""The episode interface of PANet, ALPNet and PSMNet: shapes, broadcasting, empty supports,
gradients, the registry and its options."""
import dataclasses

import pytest
import torch

from models import MODEL_BUILDERS, build_model, model_options
from models.cross_attention import CrossAttentionBlock
from models.losses import alignment_loss, weighted_cross_entropy

MODEL_NAMES = sorted(MODEL_BUILDERS)
SMALL = dict(encoder="resnet18", feature_channels=32)


def _episode(batch, shots, size, support_batch=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    support_batch = batch if support_batch is None else support_batch
    support_images = torch.randn(support_batch, shots, 3, size, size, generator=generator)
    support_masks = torch.zeros(support_batch, shots, size, size)
    support_masks[..., size // 4 : size // 2, size // 4 : 3 * size // 4] = 1.0
    query_images = torch.randn(batch, 3, size, size, generator=generator)
    return support_images, support_masks, query_images


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size,shots", [(64, 1), (96, 3)])
def test_output_shapes_for_batches_and_shots(name, size, shots):
    model = build_model(name, **SMALL)
    output = model(*_episode(2, shots, size), return_alignment=True)
    assert output.logits.shape == (2, 2, size, size)
    assert output.alignment_logits.shape == (2, shots, 2, size, size)
    assert torch.isfinite(output.logits).all() and torch.isfinite(output.alignment_logits).all()
    assert model(*_episode(2, shots, size)).alignment_logits is None


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_support_batch_of_one_is_shared_by_every_query(name):
    model = build_model(name, **SMALL).eval()
    support_images, support_masks, query_images = _episode(3, 2, 64, support_batch=1)
    with torch.no_grad():
        shared = model(support_images, support_masks, query_images).logits
        repeated = model(support_images.expand(3, -1, -1, -1, -1), support_masks.expand(3, -1, -1, -1), query_images)
    assert shared.shape == (3, 2, 64, 64)
    assert torch.allclose(shared, repeated.logits, atol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_empty_support_foreground_gives_finite_background_logits(name):
    model = build_model(name, **SMALL)
    support_images, support_masks, query_images = _episode(2, 2, 64)
    output = model(support_images, torch.zeros_like(support_masks), query_images, return_alignment=True)
    assert torch.isfinite(output.logits).all() and torch.isfinite(output.alignment_logits).all()
    assert (output.logits.argmax(dim=1) == 0).all()


def test_gradients_reach_the_encoder_and_every_mcam_level():
    torch.manual_seed(0)
    model = build_model("psmnet", **SMALL)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    support_images, support_masks, query_images = _episode(1, 1, 64)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, 24:48, 8:40] = 1
    blocks = [block for block in model.modules() if isinstance(block, CrossAttentionBlock)]
    assert len(blocks) == 3
    for step in range(2):
        optimiser.zero_grad()
        output = model(support_images, support_masks, query_images, return_alignment=True)
        loss = weighted_cross_entropy(output.logits, labels) + alignment_loss(output.alignment_logits, support_masks)
        loss.backward()
        if step == 0:  # zero-initialised output projections: only they learn at first
            assert all(block.output_projection.weight.grad.abs().sum() > 0 for block in blocks)
            assert all(block.query_projection.weight.grad.abs().sum() == 0 for block in blocks)
        optimiser.step()
    for block in blocks:
        for linear in (block.query_projection, block.key_projection, block.value_projection):
            assert linear.weight.grad.abs().sum() > 0
    assert model.encoder.trunk[0].weight.grad.abs().sum() > 0
    assert model.encoder.projection.weight.grad.abs().sum() > 0


def test_ablation_flags_change_the_prototypes_and_modules():
    support_images, support_masks, _ = _episode(1, 2, 64)
    without_psm = build_model("psmnet", use_psm=False, use_mcam=False, **SMALL)
    assert without_psm.cross_attention is None
    features, _ = without_psm.encode(support_images, torch.zeros(0, 3, 64, 64))
    masks = torch.nn.functional.interpolate(support_masks, size=features.shape[-2:], mode="bilinear")
    assert without_psm.class_prototypes(features, masks).foreground.shape == (1, 2, 32)  # one per shot
    with_psm = build_model("psmnet", n_splits=2, use_local_background_prototypes=True, local_window=2, **SMALL)
    prototypes = with_psm.class_prototypes(features, masks)
    assert prototypes.foreground.shape == (1, 2 * 4, 32)  # global, A_1, A_2, R_2 per shot
    assert prototypes.background.shape == (1, 2 * 4 + 2 * 16 + 2, 32)  # + 4 x 4 windows + fallbacks


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="alpnet"):
        build_model("unet", **SMALL)
    with pytest.raises(ValueError, match="n_splits"):
        build_model("psmnet", n_split=3, **SMALL)
    with pytest.raises(ValueError, match="softmax"):
        build_model("psmnet", attention_scaling="linear", **SMALL)


def test_psmnet_defaults_follow_the_paper_description():
    defaults = model_options("psmnet")
    assert defaults["n_splits"] == 3 and defaults["split_threshold"] == "adaptive"
    assert defaults["use_psm"] and defaults["use_mcam"] and defaults["score_scale"] == 20.0
    assert defaults["attention_scaling"] == "softmax" and defaults["prototype_combination"] == "softmax"
    assert not defaults["use_local_background_prototypes"]
    options_type, _ = MODEL_BUILDERS["psmnet"]
    assert {field.name for field in dataclasses.fields(options_type)} == set(defaults)


def test_malformed_episode_raises_one_clear_error():
    model = build_model("panet", **SMALL)
    support_images, support_masks, query_images = _episode(2, 1, 64)
    with pytest.raises(ValueError, match="support_masks"):
        model(support_images, support_masks[:, :, :32], query_images)
    with pytest.raises(ValueError, match="support batch"):
        model(support_images, support_masks, query_images[:1])


@pytest.mark.parametrize("scaling", ["softmax", "mean"])
def test_psmnet_under_bfloat16_autocast_gives_finite_float32_logits(scaling):
    model = build_model("psmnet", attention_scaling=scaling, **SMALL)
    support_images, support_masks, query_images = _episode(2, 2, 32)  # bf16 on CPU is slow: tiny images
    for masks in (support_masks, torch.zeros_like(support_masks)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(support_images, masks, query_images, return_alignment=True)
        assert output.logits.dtype == torch.float32
        assert torch.isfinite(output.logits).all() and torch.isfinite(output.alignment_logits).all()
