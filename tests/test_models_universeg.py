"""UniverSeg: shapes for any support size, invariance to the support order, the two-class logits of
one sigmoid output, the paper's widths, one episode overfitted, and a model without an alignment
branch in the registry, the losses and the config."""
import pytest
import torch

import train as train_script  # noqa: F401  (registers the "train" main)
from config import ex
from experiment.config_checks import ConfigError, check_evaluation_config, check_training_config
from experiment.training_step import episode_losses
from models import alignment_loss_weight, build_model, check_alignment_weight
from models.losses import soft_dice_loss, weighted_cross_entropy
from models.universeg import CrossBlock, UniverSeg, UniverSegOptions

OVERFIT_SIZE = 64
OVERFIT_MAX_STEPS = 200
TARGET_DICE = 0.95
UNTRAINED_DICE_BOUND = 0.6  # the initial weights' Dice on the overfitted episode stays below this
LEARNING_RATE = 1e-3
CONTRAST = 1.5
NOISE = 0.3
# released UniverSeg v1 (encoder [64] * 4, decoder [64] * 3): 1,182,785 parameters by this count:
# cross conv (in + in) x 64 x 9 + 64, two 64 x 64 x 9 + 64 convs per block, a 1 x 1 output conv
PAPER_PARAMETERS = sum(
    (query_in + support_in) * 64 * 9 + 64 + 2 * (64 * 64 * 9 + 64)
    for query_in, support_in in [(1, 2), (64, 64), (64, 64), (64, 64), (128, 128), (128, 128), (128, 128)]
) + 64 + 1


def _episode(batch, shots, size, support_batch=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    support_batch = batch if support_batch is None else support_batch
    support_images = torch.randn(support_batch, shots, 3, size, size, generator=generator)
    support_masks = (torch.rand(support_batch, shots, size, size, generator=generator) > 0.7).float()
    query_images = torch.randn(batch, 3, size, size, generator=generator)
    return support_images, support_masks, query_images


def _small_model(seed=0):
    torch.manual_seed(seed)
    return UniverSeg(UniverSegOptions(encoder_widths=[8, 8, 8], decoder_widths=[8, 8])).eval()


@pytest.mark.parametrize("shots", [1, 8])
def test_logits_have_the_episode_shape_for_one_and_eight_support_pairs(shots):
    model = _small_model()
    with torch.no_grad():
        output = model(*_episode(2, shots, 32))
    assert output.logits.shape == (2, 2, 32, 32) and output.alignment_logits is None
    assert torch.isfinite(output.logits).all()


def test_the_paper_configuration_has_the_released_widths_and_parameter_count():
    model = build_model("universeg", pretrained=None)
    assert [block.query_convolution.out_channels for block in model.encoder_blocks] == [64, 64, 64, 64]
    assert [block.query_convolution.out_channels for block in model.decoder_blocks] == [64, 64, 64]
    assert model.encoder_blocks[0].cross_convolution.in_channels == 3  # grey query || (grey image, mask)
    assert sum(parameter.numel() for parameter in model.parameters()) == PAPER_PARAMETERS == 1_182_785
    with torch.no_grad():
        assert model(*_episode(1, 2, 128)).logits.shape == (1, 2, 128, 128)


def test_permuting_the_support_set_leaves_the_output_unchanged():
    model = _small_model()
    support_images, support_masks, query_images = _episode(2, 5, 32)
    order = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        logits = model(support_images, support_masks, query_images).logits
        permuted = model(support_images[:, order], support_masks[:, order], query_images).logits
        other_masks = model(support_images, support_masks.roll(1, dims=-1), query_images).logits
    assert torch.allclose(logits, permuted, atol=1e-5)
    assert not torch.allclose(logits, other_masks, atol=1e-3)  # the masks do reach the output


def test_a_cross_block_averages_the_cross_convolution_over_the_support_set():
    torch.manual_seed(0)
    block = CrossBlock(query_channels=1, support_channels=2, width=4)
    query, support = torch.randn(1, 1, 6, 6), torch.randn(1, 3, 2, 6, 6)
    new_query, new_support = block(query, support)
    pairs = [block.cross_convolution(torch.cat([query, support[:, index]], dim=1)) for index in range(3)]
    expected_query = torch.nn.functional.leaky_relu(block.query_convolution(torch.stack(pairs).mean(dim=0)))
    expected_second = torch.nn.functional.leaky_relu(block.support_convolution(pairs[1]))
    assert torch.allclose(new_query, expected_query, atol=1e-5)
    assert torch.allclose(new_support[:, 1], expected_second, atol=1e-5)


def test_two_class_logits_are_the_sigmoid_output_halved_and_negated():
    model = _small_model()
    with torch.no_grad():
        logits = model(*_episode(1, 2, 32)).logits
    assert torch.equal(logits[:, 0], -logits[:, 1])
    foreground_logit = 2 * logits[:, 1]
    assert torch.allclose(torch.softmax(logits, dim=1)[:, 1], torch.sigmoid(foreground_logit), atol=1e-6)


def test_a_support_batch_of_one_is_shared_by_every_query_and_only_the_grey_channel_is_read():
    model = _small_model()
    support_images, support_masks, query_images = _episode(3, 2, 32, support_batch=1)
    with torch.no_grad():
        shared = model(support_images, support_masks, query_images).logits
        repeated = model(support_images.expand(3, -1, -1, -1, -1), support_masks.expand(3, -1, -1, -1), query_images)
        other_channels = query_images.clone()
        other_channels[:, 1:] = 0.0
        grey_only = model(support_images, support_masks, other_channels).logits
    assert torch.allclose(shared, repeated.logits, atol=1e-5)
    assert torch.equal(shared, grey_only)


def test_malformed_episodes_and_requests_raise_one_clear_error():
    model = _small_model()
    support_images, support_masks, query_images = _episode(2, 1, 32)
    with pytest.raises(ValueError, match="alignment branch"):
        model(support_images, support_masks, query_images, return_alignment=True)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(*_episode(2, 1, 30))
    with pytest.raises(ValueError, match="support_masks"):
        model(support_images, support_masks[:, :, :16], query_images)
    with pytest.raises(ValueError, match="decoder_widths"):
        UniverSegOptions(encoder_widths=(8, 8, 8), decoder_widths=(8,))
    with pytest.raises(ValueError, match=r"model\.pretrained=None"):
        build_model("universeg", pretrained="COCO_WITH_VOC_LABELS_V1")


def _square(top, left, side=24):
    mask = torch.zeros(OVERFIT_SIZE, OVERFIT_SIZE)
    mask[top : top + side, left : left + side] = 1.0
    return mask


def test_universeg_overfits_one_episode():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    support_mask, query_mask = _square(16, 16), _square(24, 20)
    support = CONTRAST * support_mask + NOISE * torch.randn(OVERFIT_SIZE, OVERFIT_SIZE, generator=generator)
    query = CONTRAST * query_mask + NOISE * torch.randn(OVERFIT_SIZE, OVERFIT_SIZE, generator=generator)
    labels = query_mask.long()[None]
    model = build_model("universeg", pretrained=None, encoder_widths=[16, 16, 16], decoder_widths=[16, 16])
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    dices = []
    for _ in range(OVERFIT_MAX_STEPS):
        logits = model(support.expand(1, 1, 3, -1, -1), support_mask[None, None], query.expand(1, 3, -1, -1)).logits
        predicted, truth = logits.detach().argmax(dim=1) == 1, labels == 1
        dices.append((2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())).item())
        if dices[-1] > TARGET_DICE:
            break
        loss = weighted_cross_entropy(logits, labels, (1.0, 1.0)) + soft_dice_loss(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert dices[0] < UNTRAINED_DICE_BOUND and dices[-1] > TARGET_DICE  # learnt, not given by the initial weights


def test_a_model_without_alignment_branch_gets_no_alignment_term_and_refuses_a_weight():
    assert alignment_loss_weight("universeg", "original") == 0.0
    assert alignment_loss_weight("universeg", "with_alignment") == 0.0
    check_alignment_weight("psmnet", 1.0)
    with pytest.raises(ValueError, match="no alignment branch.*alignment_loss_weight=0"):
        check_alignment_weight("universeg", 1.0)

    support_images, support_masks, query_images = _episode(1, 2, 32)
    batch = {"support_images": support_images, "support_masks": support_masks, "query_images": query_images,
             "query_labels": (torch.rand(1, 32, 32) > 0.5).long()}
    config = {"model": {"name": "universeg"}, "alignment_loss_weight": 0.0, "dice_loss_weight": 1.0,
              "ignore_index": 255}
    model = _small_model().train()
    output, losses = episode_losses(model, batch, config, torch.ones(2), torch.device("cpu"), "fp32")
    assert set(losses) == {"query_ce", "dice"} and output.alignment_logits is None
    sum(losses.values()).backward()
    assert model.output_convolution.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no alignment branch"):
        episode_losses(model, batch, {**config, "alignment_loss_weight": 1.0}, torch.ones(2), torch.device("cpu"),
                       "fp32")


def composed(*named_configs, **updates) -> dict:
    return ex.run("resolved_config", config_updates=updates, named_configs=list(named_configs),
                  options={"--loglevel": "ERROR"}).result


@pytest.mark.parametrize("order", [("universeg", "cpu"), ("cpu", "universeg")])
def test_the_universeg_config_has_no_alignment_and_128_pixel_slices_in_any_order(order):
    config = composed("chaost2", "setting1", *order)
    assert config["model"]["name"] == "universeg" and config["model"]["pretrained"] is None
    assert config["alignment_loss_weight"] == 0.0 and config["dice_loss_weight"] == 1.0
    assert config["image_size"] == 128 and config["n_steps"] == 3000


def test_config_checks_refuse_an_alignment_weight_an_image_size_off_the_grid_and_no_support_slice():
    check_training_config(composed("chaost2", "universeg", "cpu"))
    with pytest.raises(ConfigError, match=r"model 'universeg' has no alignment branch.*alignment_loss_weight=1\.0"):
        check_training_config(composed("chaost2", "universeg", "cpu", alignment_loss_weight=1.0))
    with pytest.raises(ConfigError, match=r"image_size=100 .*universeg needs a multiple of 8"):
        check_training_config(composed("chaost2", "universeg", "cpu", image_size=100))
    check_training_config(composed("chaost2", "psmnet", "cpu", image_size=100))  # upsampled logits: any size
    with pytest.raises(ConfigError, match=r"n_support_slices=0 is out of range"):
        check_evaluation_config(composed("chaost2", "universeg", "cpu", n_support_slices=0))


def test_training_universeg_with_an_alignment_weight_stops_before_any_data_is_read(tmp_path):
    with pytest.raises(ValueError, match="universeg.*no alignment branch"):
        ex.run("train", config_updates=dict(data_root=str(tmp_path / "no_data"), runs_root=str(tmp_path / "runs"),
                                            alignment_loss_weight=1.0),
               named_configs=["chaost2", "universeg", "cpu"], options={"--loglevel": "ERROR"})
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pth"))
