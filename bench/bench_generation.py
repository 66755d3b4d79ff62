"""What MGCC's generation stage costs on this machine: seconds per VAE step, per diffusion step and
per generated image, at Medfusion's sizes and at the small ones, and the whole stage's time at
scripts/generate_unlabelled.py's defaults (20k VAE steps, 50k diffusion steps) estimated from them.

The steps are the script's own (models/latent_diffusion.py's losses on random images in [0, 1],
Adam / AdamW at its learning rate, its batch sizes); the variants' steps are interleaved
round-robin so that a busy machine slows each alike, and the median of the timed steps is
reported. Sampling is timed with a few DDIM steps and scaled to the 150 of a generated image
(each DDIM step costs one UNet forward pass). No data is read:

    python bench/bench_generation.py --steps 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from generate_unlabelled import DIFFUSION_BATCH, LEARNING_RATE, SMALL_SIZES, VAE_BATCH  # noqa: E402
from models.latent_diffusion import SAMPLING_STEPS, LatentDiffusion, LatentDiffusionOptions  # noqa: E402

WARMUP_STEPS = 1
TIMED_SAMPLING_STEPS = 5  # DDIM steps timed per generated image, scaled to SAMPLING_STEPS
DEFAULT_VAE_STEPS, DEFAULT_DIFFUSION_STEPS = 20_000, 50_000  # scripts/generate_unlabelled.py's defaults
SECONDS_PER_HOUR = 3600
# name -> LatentDiffusionOptions
VARIANTS = {
    "Medfusion sizes, 256 px": LatentDiffusionOptions(image_size=256),
    "small, 128 px": LatentDiffusionOptions(image_size=128, **SMALL_SIZES),
    "small, 64 px": LatentDiffusionOptions(image_size=64, **SMALL_SIZES),
}


def stage_step(model: LatentDiffusion, optimizer: torch.optim.Optimizer, stage: str, batch_size: int) -> float:
    """Seconds of one training step of `stage` ("vae" | "diffusion") on random images."""
    images = torch.rand(batch_size, 1, model.options.image_size, model.options.image_size)
    started = time.perf_counter()
    losses = model.vae_loss(images) if stage == "vae" else model.diffusion_loss(images)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    return time.perf_counter() - started


@torch.no_grad()
def image_seconds(model: LatentDiffusion) -> float:
    """Seconds to generate one image with SAMPLING_STEPS DDIM steps, from TIMED_SAMPLING_STEPS of them."""
    started = time.perf_counter()
    model.sample(1, torch.Generator().manual_seed(0), TIMED_SAMPLING_STEPS)
    return (time.perf_counter() - started) * SAMPLING_STEPS / TIMED_SAMPLING_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and stage (after a warm-up)")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    runners, n_parameters = {}, {}
    for name, options in VARIANTS.items():
        model = LatentDiffusion(options)
        n_parameters[name] = sum(parameter.numel() for parameter in model.parameters())
        vae_optimizer = torch.optim.Adam(model.vae.parameters(), lr=LEARNING_RATE)
        unet_optimizer = torch.optim.AdamW(model.unet.parameters(), lr=LEARNING_RATE)
        runners[name] = {
            "vae": lambda model=model, optimizer=vae_optimizer: stage_step(model.train(), optimizer, "vae", VAE_BATCH),
            "diffusion": lambda model=model, optimizer=unet_optimizer: stage_step(model.train(), optimizer, "diffusion",
                                                                               DIFFUSION_BATCH),
            "image": lambda model=model: image_seconds(model.eval()),
        }
    timings = {name: {part: [] for part in parts} for name, parts in runners.items()}
    for step in range(WARMUP_STEPS + arguments.steps):
        for name, parts in runners.items():
            for part, run in parts.items():
                seconds = run()
                if step >= WARMUP_STEPS:
                    timings[name][part].append(seconds)
    print(f"median of {arguments.steps} timed steps after {WARMUP_STEPS} warm-up, {torch.get_num_threads()} threads; "
          f"VAE batch {VAE_BATCH}, diffusion batch {DIFFUSION_BATCH}, {SAMPLING_STEPS} DDIM steps per image")
    print()
    print("| variant | parameters (M) | s / VAE step | s / diffusion step | s / image | "
          f"hours for {DEFAULT_VAE_STEPS} + {DEFAULT_DIFFUSION_STEPS} steps |")
    print("|---|---|---|---|---|---|")
    for name, parts in timings.items():
        medians = {part: statistics.median(values) for part, values in parts.items()}
        hours = (DEFAULT_VAE_STEPS * medians["vae"] + DEFAULT_DIFFUSION_STEPS * medians["diffusion"]) / SECONDS_PER_HOUR
        print(f"| {name} | {n_parameters[name] / 1e6:.1f} | {medians['vae']:.3f} | {medians['diffusion']:.3f} | "
              f"{medians['image']:.2f} | {hours:.0f} |")


if __name__ == "__main__":
    main()
