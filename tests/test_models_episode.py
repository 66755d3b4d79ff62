"""The episode interface of the prototype models PANet, ALPNet and PSMNet: shapes, broadcasting, empty supports,
gradients, the registry and its options."""
import dataclasses

import pytest
import torch

from models import MODEL_REGISTRY, alignment_loss_weight, build_model, model_options, original_steps
from models.cross_attention import MCAM_DIRECTIONS, GuideToQueryBlock
from models.losses import alignment_loss, weighted_cross_entropy

# the prototype models (the shared base of models/base.py, with an alignment branch); UniverSeg's
# interface is tested in tests/test_models_universeg.py
MODEL_NAMES = sorted(name for name, entry in MODEL_REGISTRY.items() if entry.has_alignment_branch)
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
    assert output.alignment_counted.shape == (2,) and output.alignment_counted.dtype == torch.bool
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
def test_empty_support_foreground_scores_zero_as_the_originals_without_nan(name):
    model = build_model(name, **SMALL)
    support_images, support_masks, query_images = _episode(2, 2, 64)
    output = model(support_images, torch.zeros_like(support_masks), query_images, return_alignment=True)
    assert torch.isfinite(output.logits).all() and torch.isfinite(output.alignment_logits).all()
    assert torch.equal(output.logits[:, 1], torch.zeros_like(output.logits[:, 1]))  # zero prototype: cosine 0


def test_only_panet_skips_the_alignment_of_a_query_without_predicted_foreground():
    support_images, support_masks, query_images = _episode(2, 1, 64)
    for name, expected in (("panet", False), ("alpnet", True), ("psmnet", True)):
        model = build_model(name, **SMALL)
        # an empty support foreground makes the query prediction all background (foreground scores 0,
        # background cosine of features with their own class mean > 0 for these inputs)
        output = model(support_images, torch.zeros_like(support_masks), query_images, return_alignment=True)
        assert (output.logits.argmax(dim=1) == 0).all()
        assert output.alignment_counted.tolist() == [expected, expected], name


def test_panet_pools_features_upsampled_to_the_mask_resolution():
    model = build_model("panet", **SMALL)
    features = torch.randn(1, 1, 32, 8, 8)
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., 5:30, 3:17] = 1.0
    upsampled = torch.nn.functional.interpolate(features[0], size=(64, 64), mode="bilinear", align_corners=False)
    expected = (upsampled * masks[0]).sum(dim=(-2, -1)) / (masks.sum() + 1e-5)
    prototypes = model.class_prototypes(features, masks)
    assert torch.allclose(prototypes.foreground[0, 0], expected[0], atol=1e-5)
    background = (upsampled * (1 - masks[0])).sum(dim=(-2, -1)) / ((1 - masks).sum() + 1e-5)
    assert torch.allclose(prototypes.background[0, 0], background[0], atol=1e-5)


def test_gradients_reach_the_encoder_and_every_mcam_level():
    torch.manual_seed(0)
    model = build_model("psmnet", **SMALL)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    support_images, support_masks, query_images = _episode(1, 1, 64)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, 24:48, 8:40] = 1
    blocks = [block for block in model.modules() if isinstance(block, GuideToQueryBlock)]
    assert len(blocks) == 3
    for step in range(2):
        optimiser.zero_grad()
        output = model(support_images, support_masks, query_images, return_alignment=True)
        loss = weighted_cross_entropy(output.logits, labels) + alignment_loss(output.alignment_logits, support_masks)
        loss.backward()
        if step == 0:  # zero-initialised output projections: only they learn at first
            assert all(block.output_projection.weight.grad.abs().sum() > 0 for block in blocks)
            assert all(block.guide_projection.weight.grad.abs().sum() == 0 for block in blocks)
        optimiser.step()
    for block in blocks:
        for projection in (block.guide_projection, block.key_projection, block.value_projection):
            assert projection.weight.grad.abs().sum() > 0
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
    assert prototypes.background.shape == (1, 2 * 4 + 2 * 16, 32)  # + the 2 x 2 windows of 8 x 8 features


def test_psmnet_pools_its_background_windows_as_in_training_or_evaluation_mode():
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(1, 1, 32, 8, 8, generator=generator)
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., :3, :3] = 1.0  # the foreground in one corner: every window away from it is background
    model = build_model("psmnet", n_splits=2, **SMALL)  # 4 split prototypes per shot, then the windows
    for training, window in ((True, 4), (False, 2)):
        prototypes = model.train(training).class_prototypes(features, masks)
        local, local_valid = prototypes.background[:, 4:], prototypes.background_valid[:, 4:]
        pooled = torch.nn.functional.avg_pool2d(features[0], window).flatten(2).transpose(1, 2)  # (1, windows, C)
        coverage = torch.nn.functional.avg_pool2d(1.0 - masks, window).flatten(1)
        assert local.shape == (1, (8 // window) ** 2, 32), training
        assert torch.allclose(local, pooled, atol=1e-6) and torch.equal(local_valid, coverage > 0.95), training
    without = build_model("psmnet", n_splits=2, use_local_background_prototypes=False, **SMALL)
    assert without.class_prototypes(features, masks).background.shape == (1, 4, 32)


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="alpnet"):
        build_model("unet", **SMALL)
    with pytest.raises(ValueError, match="n_splits"):
        build_model("psmnet", n_split=3, **SMALL)
    with pytest.raises(ValueError, match="guide_to_query"):
        build_model("psmnet", mcam_direction="linear", **SMALL)


def test_psmnet_defaults_follow_the_paper_description():
    defaults = model_options("psmnet")
    assert defaults["n_splits"] == 3 and defaults["split_threshold"] == "adaptive"
    assert defaults["use_psm"] and defaults["use_mcam"] and defaults["score_scale"] == 20.0
    assert defaults["mcam_direction"] == "guide_to_query" and defaults["prototype_combination"] == "softmax"
    # windowed background prototypes with SSL-ALPNet's train / test windows (reconstructed, docs/METHOD.md)
    assert defaults["use_local_background_prototypes"]
    assert (defaults["local_window"], defaults["test_local_window"], defaults["local_coverage"]) == (4, 2, 0.95)
    options_type = MODEL_REGISTRY["psmnet"].options_type
    assert {field.name for field in dataclasses.fields(options_type)} == set(defaults)


def test_registry_records_how_the_originals_train():
    assert [original_steps(name) for name in ("psmnet", "alpnet", "panet")] == [50_000, 100_000, 100_000]
    assert [alignment_loss_weight(name, "original") for name in ("psmnet", "alpnet", "panet")] == [0.0, 1.0, 1.0]
    assert [alignment_loss_weight(name, "with_alignment") for name in ("psmnet", "alpnet", "panet")] == [1.0] * 3
    with pytest.raises(ValueError, match="original"):
        alignment_loss_weight("psmnet", "paper")


def test_malformed_episode_raises_one_clear_error():
    model = build_model("panet", **SMALL)
    support_images, support_masks, query_images = _episode(2, 1, 64)
    with pytest.raises(ValueError, match="support_masks"):
        model(support_images, support_masks[:, :, :32], query_images)
    with pytest.raises(ValueError, match="support batch"):
        model(support_images, support_masks, query_images[:1])


@pytest.mark.parametrize("direction", MCAM_DIRECTIONS)
def test_psmnet_under_bfloat16_autocast_gives_finite_float32_logits(direction):
    model = build_model("psmnet", mcam_direction=direction, **SMALL)
    support_images, support_masks, query_images = _episode(2, 2, 32)  # bf16 on CPU is slow: tiny images
    for masks in (support_masks, torch.zeros_like(support_masks)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(support_images, masks, query_images, return_alignment=True)
        assert output.logits.dtype == torch.float32
        assert torch.isfinite(output.logits).all() and torch.isfinite(output.alignment_logits).all()


def test_alignment_prototypes_pool_the_hard_prediction_at_feature_resolution():
    model = build_model("panet", **SMALL)
    generator = torch.Generator().manual_seed(5)
    query_features = torch.randn(1, 32, 8, 8, generator=generator)
    support_features = torch.randn(1, 1, 32, 8, 8, generator=generator)
    feature_logits = torch.randn(1, 2, 8, 8, generator=generator)
    alignment, counted, scorable = model.align(query_features, feature_logits, support_features, (64, 64))
    predicted = (feature_logits.argmax(dim=1) == 1).float()  # hard, at 8 x 8: PANet's and SSL-ALPNet's `pred`
    prototypes = [(query_features * mask).sum(dim=(-2, -1)) / (mask.sum() + 1e-5) for mask in (1 - predicted, predicted)]
    scores = torch.stack([20 * torch.nn.functional.cosine_similarity(support_features[:, 0], p[..., None, None], dim=1)
                          for p in prototypes], dim=1)
    expected = torch.nn.functional.interpolate(scores, size=(64, 64), mode="bilinear", align_corners=False)
    assert alignment.shape == (1, 1, 2, 64, 64) and counted.tolist() == [True] and scorable is None
    assert torch.allclose(alignment[:, 0], expected, atol=1e-4)
