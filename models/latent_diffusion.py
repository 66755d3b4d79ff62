"""MGCC's generation stage: an unconditional latent diffusion model trained from scratch on a
dataset's training images (MGCC arXiv 2305.09447, Sec. 2.1; its README points to Medfusion,
mueller-franzes/medfusion, whose VAE and latent DDPM set-up this follows), built from the
`diffusers` library's parts: `AutoencoderKL`, `UNet2DModel`, `DDPMScheduler` (training) and
`DDIMScheduler` (sampling).

Two stages, as Medfusion's `train_latent_embedder_2d.py` then `train_diffusion.py`:

- the VAE: images in [-1, 1] -> a latent of `latent_channels` at 1/2^(len(vae_channels) - 1) of the
  side; loss = mean squared reconstruction error + 1e-6 x KL (Medfusion's MSE loss and
  embedding_loss_weight). Medfusion adds an LPIPS perceptual loss (weight 1); LPIPS needs
  ImageNet-trained VGG weights, which this project cannot download, so it is left out;
- the diffusion model: a UNet predicting the noise of the frozen VAE's latents (Medfusion's
  estimator objective x_T), 1000 steps, betas 0.002..0.02 on the scaled-linear schedule; latents
  are divided by their standard deviation over the training images first (`latent_scale`, Stable
  Diffusion's practice; Medfusion feeds them unscaled), so that the noise schedule fits them;
- sampling: DDIM with 150 steps (Medfusion's sample.py), decoded by the VAE, clipped to [0, 1].

The sizes are options: Medfusion's (VAE 64-128-256-512 channels, 8 latent channels; UNet 256-256-
512-1024) are the defaults; tests and the CPU use small ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DModel

KL_WEIGHT = 1e-6  # Medfusion VAE embedding_loss_weight
TRAINING_TIMESTEPS = 1000  # Medfusion GaussianNoiseScheduler timesteps
BETA_RANGE = (0.002, 0.02)  # beta_start, beta_end
BETA_SCHEDULE = "scaled_linear"  # linspace(sqrt(start), sqrt(end))^2, Medfusion's and diffusers' alike
SAMPLING_STEPS = 150  # Medfusion sample.py: DDIM with 150 steps
NORM_GROUPS = 8  # Medfusion's GroupNorm(8)


@dataclass(frozen=True)
class LatentDiffusionOptions:
    """Sizes of the two networks (Medfusion's by default)."""

    image_size: int = 256  # training images are resized to this square side
    vae_channels: tuple[int, ...] = (64, 128, 256, 512)  # Medfusion VAE hid_chs: 3 downsamplings
    latent_channels: int = 8  # Medfusion emb_channels
    unet_channels: tuple[int, ...] = (256, 256, 512, 1024)  # Medfusion's noise estimator hid_chs
    layers_per_block: int = 1

    def __post_init__(self) -> None:
        downsampling = 2 ** (len(self.vae_channels) - 1 + len(self.unet_channels) - 1)
        if self.image_size % downsampling:
            raise ValueError(f"image_size={self.image_size} must be a multiple of {downsampling} (the VAE's and the "
                             f"UNet's downsamplings)")

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


class LatentDiffusion(nn.Module):
    """The VAE, the latent UNet and the latent scale (a buffer, set after the VAE's training)."""

    def __init__(self, options: LatentDiffusionOptions) -> None:
        super().__init__()
        self.options = options
        depth = len(options.vae_channels)
        self.vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * depth,
                                 up_block_types=("UpDecoderBlock2D",) * depth,
                                 block_out_channels=tuple(options.vae_channels),
                                 layers_per_block=options.layers_per_block, latent_channels=options.latent_channels,
                                 norm_num_groups=NORM_GROUPS)
        levels = len(options.unet_channels)
        self.unet = UNet2DModel(sample_size=options.latent_size, in_channels=options.latent_channels,
                                out_channels=options.latent_channels, block_out_channels=tuple(options.unet_channels),
                                down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                                layers_per_block=options.layers_per_block, norm_num_groups=NORM_GROUPS)
        self.register_buffer("latent_scale", torch.ones(()))
        self.noise_schedule = DDPMScheduler(num_train_timesteps=TRAINING_TIMESTEPS, beta_start=BETA_RANGE[0],
                                            beta_end=BETA_RANGE[1], beta_schedule=BETA_SCHEDULE)

    def vae_loss(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 1, S, S) in [0, 1] -> {"reconstruction": MSE, "kl": KL_WEIGHT x KL}."""
        posterior = self.vae.encode(images * 2 - 1).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        return {"reconstruction": F.mse_loss(reconstruction, images * 2 - 1),
                "kl": KL_WEIGHT * posterior.kl().mean()}

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, S, S) in [0, 1] -> the VAE's posterior means (B, Cz, s, s), unscaled."""
        return self.vae.encode(images * 2 - 1).latent_dist.mean

    def diffusion_loss(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """images (B, 1, S, S) in [0, 1] -> {"noise_mse": the UNet's noise-prediction error} on the
        frozen VAE's scaled latents at uniformly drawn timesteps."""
        latents = self.latents(images) / self.latent_scale
        noise = torch.randn(latents.shape, generator=generator, device=latents.device)
        timesteps = torch.randint(0, TRAINING_TIMESTEPS, (latents.shape[0],), generator=generator,
                                  device=latents.device)
        noisy = self.noise_schedule.add_noise(latents, noise, timesteps)
        return {"noise_mse": F.mse_loss(self.unet(noisy, timesteps).sample, noise)}

    @torch.no_grad()
    def sample(self, n_images: int, generator: torch.Generator, steps: int = SAMPLING_STEPS) -> torch.Tensor:
        """-> (n_images, 1, S, S) in [0, 1]: DDIM from Gaussian latents, decoded by the VAE."""
        sampler = DDIMScheduler.from_config(self.noise_schedule.config)
        sampler.set_timesteps(steps)
        size = self.options.latent_size
        latents = torch.randn((n_images, self.options.latent_channels, size, size), generator=generator)
        latents = latents.to(self.latent_scale.device)
        for timestep in sampler.timesteps:
            latents = sampler.step(self.unet(latents, timestep).sample, timestep, latents).prev_sample
        images = self.vae.decode(latents * self.latent_scale).sample
        return ((images + 1) / 2).clamp(0.0, 1.0)

    def description(self) -> dict:
        """The options as plain data (a checkpoint's config, the generation record)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self.options).items()}
