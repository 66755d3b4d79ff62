"""MGCC's generation stage at 32 px: the latent diffusion model's losses and samples, and
scripts/generate_unlabelled.py training a few steps on a tiny BUSI, writing readable images with
their record, resuming from its checkpoint and refusing a truncated one."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dataloaders.generated_images import read_generated
from evaluation.figures import DPI, OVERLAY_CELL
from models.latent_diffusion import LatentDiffusion, LatentDiffusionOptions
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.io import file_sha256, read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import generate_unlabelled  # noqa: E402  (a script, after the path set-up)
import prepare_busi  # noqa: E402
from test_image_datasets import write_mgcc_layout  # noqa: E402

SIZE = 32
TINY = LatentDiffusionOptions(image_size=SIZE, vae_channels=(8, 16), latent_channels=4, unet_channels=(16, 32))


def test_latent_diffusion_losses_and_samples():
    torch.manual_seed(0)
    model = LatentDiffusion(TINY)
    images = torch.rand(2, 1, SIZE, SIZE)
    vae = model.vae_loss(images)
    assert set(vae) == {"reconstruction", "kl"} and all(torch.isfinite(value) for value in vae.values())
    assert model.latents(images).shape == (2, 4, TINY.latent_size, TINY.latent_size) and TINY.latent_size == 16
    assert torch.isfinite(model.diffusion_loss(images)["noise_mse"])
    samples = model.sample(3, torch.Generator().manual_seed(1), steps=2)
    assert samples.shape == (3, 1, SIZE, SIZE) and 0.0 <= samples.min() and samples.max() <= 1.0
    assert torch.equal(samples, model.sample(3, torch.Generator().manual_seed(1), steps=2))  # seeded
    with pytest.raises(ValueError, match="multiple of 4"):
        LatentDiffusionOptions(image_size=30, vae_channels=(8, 16), unet_channels=(16, 32))


def test_generate_unlabelled_writes_images_with_their_record_resumes_and_refuses_a_truncated_checkpoint(tmp_path):
    write_mgcc_layout(tmp_path / "mgcc", n_cases=6)
    prepare_busi.prepare(tmp_path / "mgcc", tmp_path / "data" / "BUSI")
    out = tmp_path / "generated"
    arguments = ["--out", str(out), "--n-images", "3", "--image-size", str(SIZE), "--size", "small",
                 "--vae-steps", "2", "--diffusion-steps", "2", "--vae-batch", "2", "--diffusion-batch", "2",
                 "--sampling-steps", "2", "--checkpoint-every", "1", "--log-every", "1",
                 "--", "busi", f"data_root={tmp_path / 'data'}"]
    assert generate_unlabelled.main(arguments) == 0
    record = read_json(out / "generation.json")
    checkpoint = out / "generator" / "checkpoint.pth"
    assert record["generator_sha256"] == file_sha256(checkpoint) and record["seed"] == 0
    assert record["generator_steps"] == {"vae": 2, "diffusion": 2} and record["n_training_images"] == 3
    assert record["perceptual_loss"].startswith("left out") and load_checkpoint(checkpoint)["step"] == 4
    generated = read_generated(out, n_classes=2)
    first = generated.image(0)
    assert len(generated) == 3 and first.shape == (SIZE, SIZE) and 0.0 <= first.min() and first.max() <= 1.0
    assert list((out / "generator" / "tensorboard").iterdir())
    figure = plt.imread(out / "real_vs_generated.png")  # 2 rows (real, generated) x 3 images of 2 inches
    assert figure.shape[:2] == (2 * OVERLAY_CELL * DPI, 3 * OVERLAY_CELL * DPI)
    assert generate_unlabelled.main(arguments) == 0  # trained already: samples again, the same images
    assert np.array_equal(read_generated(out, n_classes=2).image(0), first)
    with pytest.raises(CheckpointError, match="another --out"):  # other sizes: refused, not overwritten
        generate_unlabelled.main([argument if argument != "2" else "3" for argument in arguments])
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pth"):
        generate_unlabelled.main(arguments)
