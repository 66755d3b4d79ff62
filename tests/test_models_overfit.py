"""Each model can fit one synthetic episode (Dice > 0.95): the whole pipeline learns.

These are the slowest model tests (resnet18, 64 x 64, up to MAX_STEPS Adam steps, stopping as
soon as the Dice target is met; about 10-30 s each on a shared 2-core CPU).
"""
import pytest
import torch

from models import build_model
from models.losses import alignment_loss, weighted_cross_entropy

IMAGE_SIZE = 64
MAX_STEPS = 300
TARGET_DICE = 0.95
LEARNING_RATE = 1e-3
CONTRAST = 1.5
NOISE = 0.3


def _square(top, left, side=24):
    mask = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    mask[top : top + side, left : left + side] = 1.0
    return mask


def _synthetic_episode():
    """A bright square on noise in the support and, moved, in the query."""
    generator = torch.Generator().manual_seed(1)
    support_mask, query_mask = _square(16, 16), _square(24, 20)
    support = (CONTRAST * support_mask + NOISE * torch.randn(IMAGE_SIZE, IMAGE_SIZE, generator=generator))
    query = (CONTRAST * query_mask + NOISE * torch.randn(IMAGE_SIZE, IMAGE_SIZE, generator=generator))
    return (
        support.expand(1, 1, 3, -1, -1), support_mask[None, None], query.expand(1, 3, -1, -1),
        query_mask.long()[None],
    )


def _dice(logits, labels):
    predicted = logits.argmax(dim=1) == 1
    truth = labels == 1
    return (2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())).item()


@pytest.mark.parametrize("name", ["panet", "alpnet", "psmnet"])
def test_model_overfits_one_episode(name):
    torch.manual_seed(0)
    support_images, support_masks, query_images, query_labels = _synthetic_episode()
    model = build_model(name, encoder="resnet18", feature_channels=64)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    dice = 0.0
    for _ in range(MAX_STEPS):
        output = model(support_images, support_masks, query_images, return_alignment=True)
        dice = _dice(output.logits.detach(), query_labels)
        if dice > TARGET_DICE:
            break
        loss = weighted_cross_entropy(output.logits, query_labels)
        loss = loss + alignment_loss(output.alignment_logits, support_masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert dice > TARGET_DICE
