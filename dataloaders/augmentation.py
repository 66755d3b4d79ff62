"""Joint geometric + intensity augmentation of a slice and its masks (docs/PROTOCOL.md "Training").

The protocol's augmentation (SSL-ALPNet `sabs_aug`): no flips; a random affine map (rotation,
shift, shear, isotropic scale), an elastic deformation and a gamma transform of the intensities.

Conventions, matched to SSL-ALPNet's `image_transforms.py`:

- Affine: the warp maps input to output like `cv2.warpAffine`: an output pixel p samples the input
  at M^-1 p. Rotation, shear and scale act about the image centre; the shift is in pixels.
- Elastic (Simard et al. 2003 as coded in SSL-ALPNet's `elastic_transform_nd`): one uniform(-1, 1)
  noise field per axis, smoothed by a Gaussian of std `sigma` pixels over a window of
  `int(4 sigma) | 1` pixels with reflected borders, multiplied by `alpha`; the result is a
  displacement in pixels, applied after the affine warp (output p samples the affine result at
  p + d(p)). With alpha 10, sigma 5 the displacements are a fraction of a pixel: that is the
  protocol, not a bug.
- Gamma: intensities rescaled to [0, 1] by the slice's min and max, raised to gamma, scaled back.

Everything is one `affine_grid`-style sampling grid and one `grid_sample` per tensor (image
bilinear, masks nearest), with every random number drawn from the given `torch.Generator`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GAUSSIAN_TRUNCATION = 4  # SSL-ALPNet smooths the noise over int(4 sigma) | 1 pixels
RANGE_EPSILON = 1e-8  # below this intensity range a slice is constant and gamma leaves it alone


@dataclass(frozen=True)
class AugmentationParams:
    """Ranges of the random transforms; defaults are the protocol's (SSL-ALPNet `sabs_aug`).

    rotate_deg:    rotation angle drawn uniformly in [-rotate_deg, rotate_deg] degrees
    shift_px:      shift along each axis drawn uniformly in [-shift_px, shift_px] pixels
    shear_deg:     shear angle drawn uniformly in [-shear_deg, shear_deg] degrees
    scale_range:   isotropic scale factor drawn uniformly in this range
    elastic_alpha: magnitude of the elastic displacement field (0 disables it)
    elastic_sigma: std in pixels of the Gaussian that smooths the elastic noise
    gamma_range:   gamma drawn uniformly in this range
    image_padding: `grid_sample` padding of the image; "border" repeats the edge (background)
                   instead of inventing a zero intensity, which is not background after z-scoring
    """

    rotate_deg: float = 5.0
    shift_px: float = 5.0
    shear_deg: float = 5.0
    scale_range: tuple[float, float] = (0.9, 1.2)
    elastic_alpha: float = 10.0
    elastic_sigma: float = 5.0
    gamma_range: tuple[float, float] = (0.5, 1.5)
    image_padding: str = "border"

    @classmethod
    def identity(cls) -> "AugmentationParams":
        """Zero-magnitude parameters: `augment` returns its inputs unchanged."""
        return cls(rotate_deg=0.0, shift_px=0.0, shear_deg=0.0, scale_range=(1.0, 1.0),
                   elastic_alpha=0.0, gamma_range=(1.0, 1.0))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def sample_affine_matrix(params: AugmentationParams, height: int, width: int,
                         generator: torch.Generator) -> torch.Tensor:
    """Random forward affine map in pixel coordinates (x = column, y = row), shape (3, 3) float64.

    M = shift . centre . scale . shear . rotation . centre^-1: an input pixel at p lands at M p.
    """
    angle = math.radians(_uniform(-params.rotate_deg, params.rotate_deg, generator))
    shift_x = _uniform(-params.shift_px, params.shift_px, generator)
    shift_y = _uniform(-params.shift_px, params.shift_px, generator)
    shear = math.radians(_uniform(-params.shear_deg, params.shear_deg, generator))
    scale = _uniform(*params.scale_range, generator)

    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    to_centre = torch.tensor([[1, 0, -centre_x], [0, 1, -centre_y], [0, 0, 1]], dtype=torch.float64)
    from_centre = torch.tensor([[1, 0, centre_x + shift_x], [0, 1, centre_y + shift_y], [0, 0, 1]],
                               dtype=torch.float64)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0],
                             [math.sin(angle), math.cos(angle), 0], [0, 0, 1]], dtype=torch.float64)
    shearing = torch.tensor([[1, math.tan(shear), 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    scaling = torch.diag(torch.tensor([scale, scale, 1.0], dtype=torch.float64))
    return from_centre @ scaling @ shearing @ rotation @ to_centre


def gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    """Normalised Gaussian window of `int(4 sigma) | 1` taps (SSL-ALPNet's cv2.GaussianBlur size)."""
    size = int(GAUSSIAN_TRUNCATION * sigma) | 1
    positions = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return kernel / kernel.sum()


def sample_elastic_displacement(alpha: float, sigma: float, height: int, width: int,
                                generator: torch.Generator) -> torch.Tensor:
    """Smoothed random displacement in pixels, (2, H, W) float32: [x (column), y (row)] offsets."""
    noise = torch.rand((2, 1, height, width), generator=generator) * 2 - 1
    kernel = gaussian_kernel_1d(sigma).to(torch.float32)
    half = kernel.numel() // 2
    smoothed = noise
    for axis_kernel, pad, size in ((kernel.view(1, 1, -1, 1), (0, 0, half, half), height),
                                   (kernel.view(1, 1, 1, -1), (half, half, 0, 0), width)):
        # reflect (cv2's BORDER_REFLECT_101) needs the image larger than the half window
        mode = "reflect" if half < size else "replicate"
        smoothed = F.conv2d(F.pad(smoothed, pad, mode=mode), axis_kernel)
    return alpha * smoothed[:, 0]


def sampling_grid(matrix: torch.Tensor, displacement: torch.Tensor | None,
                  height: int, width: int) -> torch.Tensor:
    """`grid_sample` grid (1, H, W, 2) float32 for output p -> input M^-1 (p + d(p)), align_corners=False.

    matrix: (3, 3) forward affine in pixel coordinates; displacement: (2, H, W) pixels or None.
    """
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing="ij")
    if displacement is not None:
        cols, rows = cols + displacement[0], rows + displacement[1]
    (a, b, c), (d, e, f) = torch.linalg.inv(matrix)[:2].tolist()
    source_x, source_y = a * cols + b * rows + c, d * cols + e * rows + f
    # pixel centre i of n pixels sits at (2 i + 1) / n - 1 in grid_sample's coordinates
    grid = torch.stack([(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1)
    return grid.unsqueeze(0)


def gamma_transform(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """(C, H, W) -> (C, H, W): rescale to [0, 1] by min/max, raise to `gamma`, scale back."""
    low, high = image.min(), image.max()
    spread = high - low
    if float(spread) < RANGE_EPSILON:
        return image
    unit = ((image - low) / spread).clamp(0, 1)
    return low + spread * unit.pow(gamma)


def augment(image: torch.Tensor, masks: torch.Tensor, params: AugmentationParams,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random geometric warp to an image and its masks, then gamma to the image.

    image: (C, H, W) float; masks: (K, H, W) any dtype (binary or label values, K may be 0).
    Returns (image (C, H, W) same dtype, masks (K, H, W) same dtype); masks are sampled with
    nearest neighbour so they keep their values (a binary mask stays binary). All random numbers
    come from `generator` (a CPU generator); the output is on the image's device.
    """
    if image.dim() != 3 or masks.dim() != 3 or image.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"augment expects image (C, H, W) and masks (K, H, W) of one size, got "
                         f"{tuple(image.shape)} and {tuple(masks.shape)}")
    height, width = image.shape[-2:]
    matrix = sample_affine_matrix(params, height, width, generator)
    displacement = None
    if params.elastic_alpha != 0:
        displacement = sample_elastic_displacement(params.elastic_alpha, params.elastic_sigma,
                                                   height, width, generator)
    gamma = _uniform(*params.gamma_range, generator)

    grid = sampling_grid(matrix, displacement, height, width).to(device=image.device)
    warped = F.grid_sample(image.unsqueeze(0), grid.to(image.dtype), mode="bilinear",
                           padding_mode=params.image_padding, align_corners=False)[0]
    warped = gamma_transform(warped, gamma)
    if masks.shape[0] == 0:
        return warped, masks
    warped_masks = F.grid_sample(masks.unsqueeze(0).to(torch.float32), grid.to(torch.float32),
                                 mode="nearest", padding_mode="zeros", align_corners=False)[0]
    return warped, warped_masks.to(masks.dtype)
