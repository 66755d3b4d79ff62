"""Behaviour of the joint image/mask augmentation (dataloaders/augmentation.py)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dataloaders.augmentation import (AugmentationParams, augment, gamma_transform, gaussian_kernel_1d,
                                      sample_affine_matrix, sample_elastic_displacement)
from utils.seeding import make_generator

HEIGHT, WIDTH = 40, 56  # deliberately not square


def _square_image_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.zeros(1, HEIGHT, WIDTH)
    image[0, 12:22, 20:30] = 1.0
    return image, (image > 0).to(torch.int64)


def _centroid(plane: torch.Tensor) -> np.ndarray:
    """(H, W) -> (x, y) intensity-weighted centroid."""
    rows, cols = torch.meshgrid(torch.arange(plane.shape[0], dtype=torch.float64),
                                torch.arange(plane.shape[1], dtype=torch.float64), indexing="ij")
    weights = plane.to(torch.float64)
    return np.array([float((cols * weights).sum() / weights.sum()), float((rows * weights).sum() / weights.sum())])


def test_default_augmentation_keeps_masks_binary_and_dtypes():
    image = torch.randn(3, HEIGHT, WIDTH)
    masks = (torch.rand(2, HEIGHT, WIDTH) > 0.5).to(torch.float32)
    out_image, out_masks = augment(image, masks, AugmentationParams(), make_generator(3))
    assert out_image.shape == (3, HEIGHT, WIDTH) and out_image.dtype == torch.float32
    assert out_masks.shape == (2, HEIGHT, WIDTH) and out_masks.dtype == torch.float32
    assert set(out_masks.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(out_masks, masks)  # it did move something


def test_nearest_sampling_keeps_label_values():
    labels = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.int64)
    labels[0, 5:20, 5:25], labels[0, 22:35, 30:50] = 3, 255
    _, out = augment(torch.rand(1, HEIGHT, WIDTH), labels, AugmentationParams(), make_generator(4))
    assert set(out.unique().tolist()) <= {0, 3, 255} and out.dtype == torch.int64


def test_zero_magnitude_parameters_are_the_identity():
    image = torch.rand(1, HEIGHT, WIDTH)
    masks = (torch.rand(3, HEIGHT, WIDTH) > 0.5).to(torch.int64)
    out_image, out_masks = augment(image, masks, AugmentationParams.identity(), make_generator(0))
    assert torch.allclose(out_image, image, atol=1e-5)
    assert torch.equal(out_masks, masks)


def test_same_generator_seed_gives_the_same_augmentation():
    image, mask = _square_image_and_mask()
    first = augment(image, mask, AugmentationParams(), make_generator(11))
    second = augment(image, mask, AugmentationParams(), make_generator(11))
    other = augment(image, mask, AugmentationParams(), make_generator(12))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_shift_only_moves_a_square_by_the_drawn_shift():
    shift_only = replace(AugmentationParams.identity(), shift_px=5.0)
    seed = 2  # draws shift (-4.03, +2.09)
    matrix = sample_affine_matrix(shift_only, HEIGHT, WIDTH, make_generator(seed))
    shift = matrix[:2, 2].numpy()  # the first draws of the generator are the affine's
    assert np.all(np.abs(shift) > 1.0), "pick a seed with a visible shift on both axes"
    assert np.all(np.abs(np.abs(shift % 1) - 0.5) > 0.2), "pick a seed whose rounding is unambiguous"

    image, mask = _square_image_and_mask()
    out_image, out_mask = augment(image, mask, shift_only, make_generator(seed))

    # bilinear interpolation moves the intensity centroid by exactly the shift
    np.testing.assert_allclose(_centroid(out_image[0]) - _centroid(image[0]), shift, atol=1e-4)
    # nearest neighbour moves the mask by the rounded shift, pixel for pixel
    dx, dy = (int(value) for value in np.round(shift))
    expected = torch.roll(mask, shifts=(dy, dx), dims=(1, 2))
    assert torch.equal(out_mask, expected)


def test_scale_about_the_centre_keeps_a_centred_square_centred_and_scales_its_area():
    scale_only = replace(AugmentationParams.identity(), scale_range=(1.2, 1.2))
    image = torch.zeros(1, 64, 64)
    image[0, 22:42, 22:42] = 1.0
    out_image, out_mask = augment(image, image.clone(), scale_only, make_generator(0))
    np.testing.assert_allclose(_centroid(out_image[0]), [31.5, 31.5], atol=1e-6)
    assert abs(float(out_image.sum()) - 400 * 1.2**2) < 400 * 0.02


def test_elastic_displacement_follows_the_ssl_alpnet_scaling():
    alpha, sigma = 10.0, 5.0
    displacement = sample_elastic_displacement(alpha, sigma, 256, 256, make_generator(7))
    kernel = gaussian_kernel_1d(sigma)
    assert kernel.numel() == 21  # int(4 * 5) | 1
    # uniform(-1, 1) noise has variance 1/3; a separable smoothing multiplies it by (sum k^2)^2
    expected_std = alpha * (1 / 3) ** 0.5 * float((kernel**2).sum())
    interior = displacement[:, 20:-20, 20:-20]
    assert displacement.shape == (2, 256, 256)
    assert abs(float(interior.std()) - expected_std) < 0.1 * expected_std
    assert abs(float(interior.mean())) < 0.1 * expected_std


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gamma_acts_on_intensities_rescaled_to_unit_range(gamma):
    ramp = torch.linspace(-2.0, 6.0, 9).view(1, 3, 3)
    unit = (ramp + 2.0) / 8.0
    expected = -2.0 + 8.0 * unit**gamma
    assert torch.allclose(gamma_transform(ramp, gamma), expected, atol=1e-6)


def test_augment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one size"):
        augment(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9), AugmentationParams(), make_generator(0))
