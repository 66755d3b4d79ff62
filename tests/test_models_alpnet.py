"""SSL-ALPNet against the original's arithmetic (models/alpmodule.py, grid_proto_fewshot.py of
SSL-ALPNet), restated here position by position: the same features and soft masks must give the
same logits within 1e-4, with 4 x 4 windows in training and 2 x 2 at test, and the foreground's
choice between local + global and global-only prototypes made on 4 x 4 windows in both modes; and
the episodes the original cannot score (no background window above the threshold: its convolution
with zero filters raises, and training.py skips the episode) are those the model reports."""
import pytest
import torch
import torch.nn as nn

from models.alpnet import ALPNet
from models.prototypes import resize_masks

CHANNELS, FEATURE_SIZE, MASK_SIZE = 4, 8, 64
SCALE, THRESHOLD, NORM_EPS, AREA_EPS = 20.0, 0.95, 1e-4, 1e-5
MODE_WINDOW, TRAIN_WINDOW, TEST_WINDOW = 4, 4, 2


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / max(vector.norm().item(), NORM_EPS)


def _softmax_weighted_score(query: torch.Tensor, prototypes: list[torch.Tensor]) -> torch.Tensor:
    """(C, h, w) query features, list of (C,) prototypes -> (h, w): sum of softmax(d) * d, 0 for none."""
    score = torch.zeros(query.shape[1:], dtype=torch.float64)
    for y in range(query.shape[1]):
        for x in range(query.shape[2]):
            distances = torch.stack([SCALE * (_unit(query[:, y, x]) @ _unit(p)) for p in prototypes]) \
                if prototypes else torch.zeros(0, dtype=torch.float64)
            score[y, x] = (torch.softmax(distances, 0) * distances).sum()
    return score


def _windows(features: torch.Tensor, masks: torch.Tensor, window: int) -> list[torch.Tensor]:
    """Window means of the features of every shot whose window mean of the mask is above the threshold."""
    kept = []
    for shot in range(features.shape[0]):
        for top in range(0, FEATURE_SIZE - window + 1, window):
            for left in range(0, FEATURE_SIZE - window + 1, window):
                if masks[shot, top:top + window, left:left + window].mean() > THRESHOLD:
                    kept.append(features[shot, :, top:top + window, left:left + window].mean(dim=(-2, -1)))
    return kept


def _global(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (features * mask).sum(dim=(-2, -1)) / (mask.sum() + AREA_EPS)


def original_logits(features, masks, query, training: bool) -> torch.Tensor:
    """features (S, C, h, w), masks (S, h, w) soft at feature size, query (C, h, w) -> (2, h, w)."""
    window = TRAIN_WINDOW if training else TEST_WINDOW
    background = _softmax_weighted_score(query, _windows(features, 1.0 - masks, window))
    largest_coverage = max(masks[shot, top:top + MODE_WINDOW, left:left + MODE_WINDOW].mean()
                           for shot in range(masks.shape[0])
                           for top in range(0, FEATURE_SIZE, MODE_WINDOW) for left in range(0, FEATURE_SIZE, MODE_WINDOW))
    if largest_coverage >= THRESHOLD:  # "gridconv+": local and per-shot global prototypes
        prototypes = _windows(features, masks, window) + [_global(features[s], masks[s]) for s in range(len(masks))]
        foreground = _softmax_weighted_score(query, prototypes)
    else:  # "mask": one global prototype, averaged over shots
        prototype = torch.stack([_global(features[s], masks[s]) for s in range(len(masks))]).mean(dim=0)
        foreground = _softmax_weighted_score(query, [prototype])
    return torch.stack([background, foreground])


def _masks(*boxes) -> torch.Tensor:
    """One soft feature-size mask per (top, left, height, width) box drawn at 64 x 64 (bilinear down)."""
    masks = torch.zeros(len(boxes), MASK_SIZE, MASK_SIZE)
    for shot, (top, left, height, width) in enumerate(boxes):
        masks[shot, top:top + height, left:left + width] = 1.0
    return resize_masks(masks, (FEATURE_SIZE, FEATURE_SIZE))


EPISODES = {
    "large organ: local + global in both modes": _masks((0, 0, 40, 44)),
    "small organ: 2 x 2 windows covered, no 4 x 4 one: global only in both modes": _masks((8, 8, 24, 24)),
    "two shots, one large one small": _masks((0, 0, 40, 44), (24, 32, 16, 16)),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(EPISODES))
def test_alpnet_logits_equal_the_original_arithmetic(name, training):
    masks = EPISODES[name]
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(1, len(masks), CHANNELS, FEATURE_SIZE, FEATURE_SIZE, generator=generator)
    query = torch.randn(1, CHANNELS, FEATURE_SIZE, FEATURE_SIZE, generator=generator)
    model = ALPNet(nn.Identity()).train(training)
    logits = model.score(query, model.class_prototypes(features, masks[None]))
    expected = original_logits(features[0].double(), masks.double(), query[0].double(), training)
    assert logits.shape == (1, 2, FEATURE_SIZE, FEATURE_SIZE)
    assert torch.allclose(logits[0].double(), expected, atol=1e-4)


def test_the_small_organ_episode_really_switches_on_the_window_sizes():
    small = EPISODES["small organ: 2 x 2 windows covered, no 4 x 4 one: global only in both modes"]
    assert len(_windows(torch.zeros(1, 1, FEATURE_SIZE, FEATURE_SIZE), small, TEST_WINDOW)) > 0
    assert len(_windows(torch.zeros(1, 1, FEATURE_SIZE, FEATURE_SIZE), small, TRAIN_WINDOW)) == 0
    model = ALPNet(nn.Identity()).eval()
    prototypes = model.class_prototypes(torch.randn(1, 1, CHANNELS, FEATURE_SIZE, FEATURE_SIZE), small[None])
    assert prototypes.foreground_valid.sum().item() == 1  # the global prototype only
    assert prototypes.background_valid.sum().item() > (FEATURE_SIZE // MODE_WINDOW) ** 2  # 2 x 2 windows at test


def _cross(width: int) -> torch.Tensor:
    """A (1, h, w) soft mask: a cross of `width` pixels through the centre of the 64 x 64 slice."""
    middle = MASK_SIZE // 2
    masks = torch.zeros(1, MASK_SIZE, MASK_SIZE)
    masks[:, middle - width // 2: middle + width // 2, :] = 1.0
    masks[:, :, middle - width // 2: middle + width // 2] = 1.0
    return resize_masks(masks, (FEATURE_SIZE, FEATURE_SIZE))


def _original_can_score(masks: torch.Tensor, training: bool) -> bool:
    """SSL-ALPNet's rule: its background ("gridconv") needs one window of the background above the threshold."""
    window = TRAIN_WINDOW if training else TEST_WINDOW
    return len(_windows(torch.zeros(len(masks), 1, FEATURE_SIZE, FEATURE_SIZE), 1.0 - masks, window)) > 0


def test_an_episode_is_scorable_exactly_where_the_original_finds_a_background_window():
    # the cross touches every 4 x 4 window (none of its background is above 0.95) but leaves 2 x 2
    # windows free; the corner organ leaves three 4 x 4 windows free
    cross, corner = _cross(8), _masks((0, 0, 24, 24))
    assert not _original_can_score(cross, training=True) and _original_can_score(cross, training=False)
    assert _original_can_score(corner, training=True)
    support_masks = torch.stack([cross, corner])  # (B = 2, S = 1, h, w), already at feature size
    generator = torch.Generator().manual_seed(4)
    support_images = torch.randn(2, 1, CHANNELS, FEATURE_SIZE, FEATURE_SIZE, generator=generator)
    query_images = torch.randn(2, CHANNELS, FEATURE_SIZE, FEATURE_SIZE, generator=generator)
    model = ALPNet(nn.Identity())
    for training, expected in ((True, [False, True]), (False, [True, True])):
        output = model.train(training)(support_images, support_masks, query_images)
        assert output.scorable.tolist() == expected, training
        background_scores_zero = torch.equal(output.logits[0, 0], torch.zeros(FEATURE_SIZE, FEATURE_SIZE))
        assert background_scores_zero == (not expected[0])  # the empty set's class scores 0 here


def test_the_alignment_branch_cannot_score_a_query_predicted_foreground_everywhere():
    generator = torch.Generator().manual_seed(6)
    query_features = torch.randn(2, CHANNELS, FEATURE_SIZE, FEATURE_SIZE, generator=generator)
    support_features = torch.randn(2, 1, CHANNELS, FEATURE_SIZE, FEATURE_SIZE, generator=generator)
    feature_logits = torch.zeros(2, 2, FEATURE_SIZE, FEATURE_SIZE)
    feature_logits[:, 1] = 1.0  # foreground everywhere ...
    feature_logits[1, 1, :TRAIN_WINDOW, :TRAIN_WINDOW] = -1.0  # ... but one 4 x 4 window of the second query
    predicted = (feature_logits.argmax(dim=1) == 1).float()
    assert [_original_can_score(mask[None], training=True) for mask in predicted] == [False, True]
    _, _, scorable = ALPNet(nn.Identity()).train().align(query_features, feature_logits, support_features, (64, 64))
    assert scorable.tolist() == [False, True]
