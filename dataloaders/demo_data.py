"""Synthetic abdominal-MRI-like scans: the DEMO dataset for CPU runs and tests.

Not from a paper: a stand-in with the layout of the preprocessed CHAOST2 data
(docs/PROTOCOL.md, "Datasets"): `image_<id>.nii.gz` with whole-number intensities >= 0 and
`label_<id>.nii.gz` with 1 liver, 2 right kidney, 3 left kidney, 4 spleen, spacing
1.25 x 1.25 x 7.7 mm. Each scan has a body outline that varies per scan, fat and muscle
layers, a vertebra with its spinal canal, aorta and vena cava, bowel-like texture, and the four
organs as ellipsoids deformed by smooth random fields, placed in radiological convention
(patient's right on the image left, anterior at the top). Each organ stands out from the tissue
around it, but over the dataset its intensities also occur in other structures, and a bias field
and noise are added, so intensity alone does not segment it. Everything is vectorised numpy and
deterministic from the seed.

Normalised coordinates: x (columns) and y (rows) in [-1, 1], z in [0, 1] from the first to the
last slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from utils.io import write_image

DEMO_SPACING_MM = (1.25, 1.25, 7.7)  # (x, y, z), as CHAOST2
DEFAULT_IMAGE_SIZE = 256
DEFAULT_SLICES = 30
SLICE_COUNT_JITTER = 2  # slices per scan vary in DEFAULT_SLICES +- this
INTENSITY_SCALE = 1000.0  # stored intensities are whole numbers in about 0..INTENSITY_SCALE

# Smooth random fields: Gaussian bumps on a coarse grid of this many nodes per axis (z, y, x).
COARSE_GRID = (4, 7, 7)

# Tissue intensities (fraction of INTENSITY_SCALE) before texture, bias and noise.
TISSUE_INTENSITY = {
    "soft_tissue": 0.45,
    "fat": 0.30,
    "muscle": 0.24,
    "vertebra": 0.52,
    "spinal_canal": 0.85,
    "aorta": 0.08,
    "vena_cava": 0.55,
    "bowel_fluid": 0.60,
    "bowel_gas": 0.05,
}
# Organs as in T2-weighted MRI: a dark liver, bright kidneys and spleen. Each differs from the
# tissue around it, but shares its intensities with structures elsewhere (liver: muscle wall, aorta,
# bowel gas; right kidney: bowel content and vena cava; spleen: spinal canal and, in most scans,
# the left kidney), so shape and context matter. With the organs inside the soft-tissue range
# instead, a few minutes of CPU training did not learn them (docs/results/demo.md).
ORGAN_INTENSITY = {1: 0.18, 2: 0.75, 3: 1.10, 4: 0.92}
ORGAN_INTENSITY_JITTER = 0.04
TEXTURE_AMPLITUDE = 0.04
BIAS_AMPLITUDE = 0.10
NOISE_STD = 0.03
PARTIAL_VOLUME_SIGMA_PX = 0.7


@dataclass(frozen=True)
class OrganShape:
    """Mean ellipsoid of an organ in normalised coordinates (centre x, y, z; semi-axes x, y, z)."""

    label: int
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]


# Drawn in this order; a later organ does not overwrite an earlier one.
ORGAN_SHAPES = (
    OrganShape(2, centre=(-0.33, 0.30, 0.38), semi_axes=(0.12, 0.16, 0.22)),  # right kidney, image left
    OrganShape(3, centre=(0.33, 0.30, 0.45), semi_axes=(0.12, 0.16, 0.22)),  # left kidney, image right
    OrganShape(4, centre=(0.50, 0.10, 0.68), semi_axes=(0.15, 0.22, 0.22)),  # spleen, posterior left
    OrganShape(1, centre=(-0.38, -0.08, 0.62), semi_axes=(0.40, 0.38, 0.36)),  # liver, large, right
)
SHAPE_JITTER = 0.04  # per-scan random shift of organ centres and relative change of semi-axes
SURFACE_ROUGHNESS = 0.25  # amplitude of the smooth field that makes ellipsoids blob-like
DEFORMATION_AMPLITUDE = 0.05  # smooth displacement of all coordinates (normalised units)


def _interpolation_basis(n_samples: int, n_nodes: int) -> np.ndarray:
    """(n_samples, n_nodes) row-normalised Gaussian weights: smooth upsampling of coarse noise."""
    positions = np.linspace(0.0, 1.0, n_samples)[:, None]
    nodes = np.linspace(0.0, 1.0, n_nodes)[None, :]
    width = 1.0 / max(n_nodes - 1, 1)
    weights = np.exp(-(((positions - nodes) / width) ** 2))
    return weights / weights.sum(axis=1, keepdims=True)


def smooth_random_field(rng: np.random.Generator, shape: tuple[int, int, int], coarse: tuple[int, int, int] = COARSE_GRID) -> np.ndarray:
    """(Z, H, W) smooth random field, scaled to unit standard deviation."""
    noise = rng.standard_normal(coarse)
    basis_z, basis_y, basis_x = (_interpolation_basis(size, nodes) for size, nodes in zip(shape, coarse))
    field = np.einsum("zi,ijk,yj,xk->zyx", basis_z, noise, basis_y, basis_x, optimize=True)
    return (field - field.mean()) / (field.std() + np.finfo(np.float64).eps)


def _organ_masks(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray, body: np.ndarray) -> np.ndarray:
    """(Z, H, W) int labels of the four organs, deformed ellipsoids clipped to the body."""
    labels = np.zeros(body.shape, dtype=np.uint8)
    for organ in ORGAN_SHAPES:
        centre = np.asarray(organ.centre) + rng.uniform(-SHAPE_JITTER, SHAPE_JITTER, 3)
        axes = np.asarray(organ.semi_axes) * (1.0 + rng.uniform(-SHAPE_JITTER, SHAPE_JITTER, 3) * 2.0)
        radius = np.sqrt(((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2)
        radius = radius + SURFACE_ROUGHNESS * 0.5 * smooth_random_field(rng, body.shape)
        labels[(radius < 1.0) & body & (labels == 0)] = organ.label
    return labels


def _disc(x: np.ndarray, y: np.ndarray, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 < 1.0


def generate_demo_scan(rng: np.random.Generator, size: int = DEFAULT_IMAGE_SIZE, n_slices: int = DEFAULT_SLICES) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scan -> (intensities (Z, H, W) float32 whole numbers >= 0, labels (Z, H, W) uint8)."""
    shape = (n_slices, size, size)
    z, y, x = np.meshgrid(np.linspace(0.0, 1.0, n_slices), np.linspace(-1.0, 1.0, size), np.linspace(-1.0, 1.0, size), indexing="ij")
    x = x + DEFORMATION_AMPLITUDE * smooth_random_field(rng, shape)
    y = y + DEFORMATION_AMPLITUDE * smooth_random_field(rng, shape)

    # Body outline: an ellipse whose size changes along z and whose border wobbles.
    half_width = rng.uniform(0.80, 0.92) * (1.0 + 0.05 * np.sin(np.pi * z))
    half_height = rng.uniform(0.58, 0.70) * (1.0 + 0.04 * np.sin(np.pi * z))
    body_radius = np.sqrt((x / half_width) ** 2 + ((y - 0.05) / half_height) ** 2) + 0.04 * smooth_random_field(rng, shape)
    body = body_radius < 1.0
    fat_depth, muscle_depth = rng.uniform(0.06, 0.14), rng.uniform(0.04, 0.08)

    intensity = np.zeros(shape)
    intensity[body] = TISSUE_INTENSITY["soft_tissue"]
    intensity[body & (body_radius > 1.0 - fat_depth - muscle_depth)] = TISSUE_INTENSITY["muscle"]
    intensity[body & (body_radius > 1.0 - fat_depth)] = TISSUE_INTENSITY["fat"]

    # Bowel-like texture: blobs of fluid and gas in the anterior abdomen.
    bowel_field = smooth_random_field(rng, shape, coarse=(6, 14, 14))
    bowel = body & (y < 0.15) & (body_radius < 1.0 - fat_depth - muscle_depth)
    intensity[bowel & (bowel_field > 0.9)] = TISSUE_INTENSITY["bowel_fluid"]
    intensity[bowel & (bowel_field < -1.2)] = TISSUE_INTENSITY["bowel_gas"]

    labels = _organ_masks(rng, x, y, z, body & (body_radius < 1.0 - fat_depth))
    for label, mean in ORGAN_INTENSITY.items():
        intensity[labels == label] = mean + rng.uniform(-ORGAN_INTENSITY_JITTER, ORGAN_INTENSITY_JITTER)
    intensity += TEXTURE_AMPLITUDE * smooth_random_field(rng, shape, coarse=(8, 32, 32)) * body

    # Spine and great vessels, drawn last (they are never organ voxels).
    spine_y = 0.05 + 0.55 * half_height
    vertebra = _disc(x, y, (0.0, spine_y), (0.13, 0.11))
    canal = _disc(x, y, (0.0, spine_y + 0.15), (0.05, 0.04))
    aorta = _disc(x, y, (0.09, spine_y - 0.17), (0.05, 0.05))
    vena_cava = _disc(x, y, (-0.12, spine_y - 0.17), (0.06, 0.045))
    for structure, name in ((vertebra, "vertebra"), (canal, "spinal_canal"), (aorta, "aorta"), (vena_cava, "vena_cava")):
        intensity[structure & body] = TISSUE_INTENSITY[name]
        labels[structure] = 0

    intensity = ndimage.gaussian_filter(intensity, sigma=(0.0, PARTIAL_VOLUME_SIGMA_PX, PARTIAL_VOLUME_SIGMA_PX))
    intensity *= np.exp(BIAS_AMPLITUDE * smooth_random_field(rng, shape, coarse=(2, 3, 3)))
    real = intensity + NOISE_STD * rng.standard_normal(shape)
    imaginary = NOISE_STD * rng.standard_normal(shape)
    magnitude = np.sqrt(real**2 + imaginary**2)  # Rician noise, as in magnitude MR images
    return np.round(magnitude * INTENSITY_SCALE).astype(np.float32), labels


def _to_image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(DEMO_SPACING_MM)
    return image


def write_demo_dataset(out_dir: str | Path, n_scans: int, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE) -> list[Path]:
    """Write scans 1..n_scans (`image_<id>.nii.gz`, `label_<id>.nii.gz`) into `out_dir`; returns the paths.

    Scan `i` depends only on (seed, i), so the same arguments give the same bytes.
    """
    if n_scans < 1 or size < 1:
        raise ValueError(f"need n_scans >= 1 and size >= 1, got {n_scans} and {size}")
    out_dir = Path(out_dir)
    written = []
    for scan_id in range(1, n_scans + 1):
        rng = np.random.default_rng([seed, scan_id])
        n_slices = DEFAULT_SLICES + int(rng.integers(-SLICE_COUNT_JITTER, SLICE_COUNT_JITTER + 1))
        intensities, labels = generate_demo_scan(rng, size=size, n_slices=n_slices)
        for array, name in ((intensities, f"image_{scan_id}.nii.gz"), (labels, f"label_{scan_id}.nii.gz")):
            write_image(_to_image(array), out_dir / name)
            written.append(out_dir / name)
    return written
