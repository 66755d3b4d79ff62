"""MGCC's first stage: train a latent diffusion model from scratch on a dataset's training images
(models/latent_diffusion.py), then write N synthetic images in the dataset's own format with a
record of the generator's checkpoint and the sampling seed (dataloaders/generated_images.py).

    python scripts/generate_unlabelled.py --out <folder> --n-images 500 -- busi data_root=<root> eval_fold=0
    python train.py with busi mgcc unlabelled_source=generated generated_dir=<folder> data_root=<root>

The arguments after `--` are train.py's (named configs and key=value): they choose the dataset and
its split, whose training images (labelled and unlabelled pool; `--training-images labelled` for
the labelled ones only) the generator learns. Training is resumable: `<out>/generator/checkpoint.pth`
is written every --checkpoint-every steps and at the end of each stage, and a later call continues
from it (a checkpoint of other sizes or data is refused); once both stages are done a call only
samples. Losses go to tensorboard (`<out>/generator/tensorboard`), progress to a tqdm bar;
`<out>/real_vs_generated.png` shows training images above generated ones (--figure-images each).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from config import composed_config, parse_command_line  # noqa: E402
from dataloaders.generated_images import (H5_FORMAT, PNG_FORMAT, read_generated_image, write_generated_image,  # noqa: E402
                                          write_record)
from dataloaders.image_datasets import is_image_dataset  # noqa: E402
from evaluation.figures import plot_image_rows  # noqa: E402
from experiment.semi_supervised_assembly import semi_supervised_data  # noqa: E402
from models.latent_diffusion import SAMPLING_STEPS, LatentDiffusion, LatentDiffusionOptions  # noqa: E402
from utils.checkpoint import (FILE_SHA256_KEY, CheckpointError, load_checkpoint, restore_rng_states,  # noqa: E402
                              save_checkpoint)
from utils.seeding import derive_seed, make_generator, seed_everything  # noqa: E402

CHECKPOINT = Path("generator") / "checkpoint.pth"
FIGURE = Path("real_vs_generated.png")  # training images beside the first generated ones
TENSORBOARD = Path("generator") / "tensorboard"
VAE_STAGE, DIFFUSION_STAGE = "vae", "diffusion"
LEARNING_RATE = 1e-4  # Medfusion: Adam (VAE) and AdamW (diffusion UNet), lr 1e-4
VAE_BATCH, DIFFUSION_BATCH = 8, 32  # Medfusion's batch sizes
PERCEPTUAL_LOSS_NOTE = ("left out: Medfusion's LPIPS perceptual loss needs ImageNet-trained VGG weights, which "
                        "cannot be downloaded here; the VAE trains on MSE + KL only")
# the sizes of `--size small`: a generator a CPU trains in minutes (the defaults are Medfusion's)
SMALL_SIZES = dict(vae_channels=(32, 64, 128), latent_channels=4, unet_channels=(64, 128, 256))


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the generated images and the generator")
    parser.add_argument("--n-images", type=int, required=True, help="synthetic images to write")
    parser.add_argument("--image-size", type=int, default=256, help="side of the training and generated images")
    parser.add_argument("--size", choices=("medfusion", "small"), default="medfusion", help="network sizes")
    parser.add_argument("--vae-steps", type=int, default=20_000, help="VAE training steps")
    parser.add_argument("--diffusion-steps", type=int, default=50_000, help="diffusion UNet training steps")
    parser.add_argument("--vae-batch", type=int, default=VAE_BATCH)
    parser.add_argument("--diffusion-batch", type=int, default=DIFFUSION_BATCH)
    parser.add_argument("--sampling-steps", type=int, default=SAMPLING_STEPS, help="DDIM steps per image")
    parser.add_argument("--sample-batch", type=int, default=16, help="images sampled at once")
    parser.add_argument("--training-images", choices=("training", "labelled"), default="training")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="training batches and sampling noise")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figure-images", type=int, default=6,
                        help="real and generated images per row of <out>/real_vs_generated.png")
    parser.add_argument("config", nargs=argparse.REMAINDER, help="-- train.py's named configs and key=value")
    args = parser.parse_args(argv)
    args.config = [argument for argument in args.config if argument != "--"]
    for key in ("n_images", "image_size", "vae_batch", "diffusion_batch", "sampling_steps", "sample_batch",
                "checkpoint_every", "log_every", "figure_images"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def training_images(config: dict, which: str, size: int) -> tuple[torch.Tensor, dict]:
    """The dataset's training images resized to size x size (bilinear, antialiased): (N, 1, S, S) in
    [0, 1], and a description of where they came from."""
    data = semi_supervised_data(config)
    slices = [data.labelled] + ([data.unlabelled] if which == "training" else [])
    images = [torch.from_numpy(np.ascontiguousarray(subset.image(index)))[None, None]
              for subset in slices for index in range(len(subset))]
    resized = torch.cat([F.interpolate(image, size=(size, size), mode="bilinear", antialias=True) for image in images])
    source = {"dataset": data.name, "data_root": config["data_root"], "eval_fold": config["eval_fold"],
              "training_images": which, "n_training_images": len(images)}
    return resized.clamp(0.0, 1.0), source


def batch(images: torch.Tensor, size: int, seed: int, step: int) -> torch.Tensor:
    """The images of one step: drawn with replacement by a generator keyed by (seed, step), so that
    a resumed run draws what an uninterrupted one would have."""
    indices = torch.randint(len(images), (size,), generator=make_generator(derive_seed(seed, step)))
    return images[indices]


@torch.no_grad()
def latent_std(model: LatentDiffusion, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The standard deviation of the VAE's latents over the training images."""
    latents = torch.cat([model.latents(images[start:start + batch_size])
                         for start in range(0, len(images), batch_size)])
    return latents.std()


def resume(path: Path, model: LatentDiffusion, optimizers: dict, description: dict) -> int:
    """Load a generator checkpoint (refused when corrupt, or of other sizes or data); -> steps done."""
    state = load_checkpoint(path)
    if state["config"] != description:
        raise CheckpointError(f"{path}: a generator of {state['config']}, not of {description}; pass another --out")
    model.load_state_dict(state["model"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizer"][name])
    restore_rng_states(state["rng"])
    return state["step"]


def train(args: argparse.Namespace, model: LatentDiffusion, images: torch.Tensor, description: dict) -> dict:
    """Both stages from where the checkpoint stopped; -> the final checkpoint's state (with its sha256)."""
    device = torch.device(args.device)
    model.to(device)
    optimizers = {VAE_STAGE: torch.optim.Adam(model.vae.parameters(), lr=LEARNING_RATE),
                  DIFFUSION_STAGE: torch.optim.AdamW(model.unet.parameters(), lr=LEARNING_RATE)}
    checkpoint = args.out / CHECKPOINT
    step = resume(checkpoint, model, optimizers, description) if checkpoint.is_file() else 0
    total = args.vae_steps + args.diffusion_steps
    writer = SummaryWriter(str(args.out / TENSORBOARD))
    with tqdm(total=total, initial=step, desc="generator", dynamic_ncols=True) as progress:
        while step < total:
            stage = VAE_STAGE if step < args.vae_steps else DIFFUSION_STAGE
            if stage == DIFFUSION_STAGE and step == args.vae_steps:  # the VAE is done: scale its latents
                model.latent_scale.fill_(latent_std(model.eval(), images.to(device), args.vae_batch))
            model.vae.train(stage == VAE_STAGE)
            model.unet.train(stage == DIFFUSION_STAGE)
            size = args.vae_batch if stage == VAE_STAGE else args.diffusion_batch
            images_of_step = batch(images, size, args.seed, step).to(device)
            losses = model.vae_loss(images_of_step) if stage == VAE_STAGE else model.diffusion_loss(images_of_step)
            optimizers[stage].zero_grad()
            sum(losses.values()).backward()
            optimizers[stage].step()
            step += 1
            progress.update()
            if step % args.log_every == 0:
                for term, value in losses.items():
                    writer.add_scalar(f"{stage}/{term}", value.item(), step)
            if step % args.checkpoint_every == 0 or step in (args.vae_steps, total):
                save_checkpoint(checkpoint, model=model, optimizer={name: optimizer.state_dict()
                                                                   for name, optimizer in optimizers.items()},
                                scheduler={}, step=step, config=description)
    writer.close()
    if not checkpoint.is_file():  # nothing to train (both step counts 0): keep the untrained generator
        save_checkpoint(checkpoint, model=model, optimizer={}, scheduler={}, step=step, config=description)
    return load_checkpoint(checkpoint)


def write_images(args: argparse.Namespace, model: LatentDiffusion, state: dict, image_format: str,
                 source: dict) -> None:
    """Sample --n-images with a generator seeded by --seed; write them and the record."""
    model.load_state_dict(state["model"])
    model.eval()
    generator = make_generator(args.seed)
    written = 0
    with tqdm(total=args.n_images, desc="sampling", dynamic_ncols=True) as progress:
        while written < args.n_images:
            count = min(args.sample_batch, args.n_images - written)
            for image in model.sample(count, generator, args.sampling_steps).cpu().numpy()[:, 0]:
                write_generated_image(args.out, image_format, written, image)
                written += 1
                progress.update()
    write_record(args.out, {
        "format": image_format, "n_images": args.n_images, "image_size": args.image_size, "seed": args.seed,
        "sampler": "DDIM", "sampling_steps": args.sampling_steps,
        "generator_checkpoint": str((args.out / CHECKPOINT).resolve()), "generator_sha256": state[FILE_SHA256_KEY],
        "generator_steps": {"vae": min(state["step"], args.vae_steps),
                            "diffusion": max(state["step"] - args.vae_steps, 0)},
        "generator": state["config"], "perceptual_loss": PERCEPTUAL_LOSS_NOTE, **source})


def write_figure(args: argparse.Namespace, images: torch.Tensor, image_format: str, source: dict) -> None:
    """<out>/real_vs_generated.png: --figure-images training images (drawn by --seed), as the
    generator saw them, above as many of the images just written, as the files hold them."""
    count = min(args.figure_images, len(images), args.n_images)
    real = images[torch.randperm(len(images), generator=make_generator(args.seed))[:count], 0].numpy()
    generated = [read_generated_image(args.out, image_format, index) for index in range(count)]
    plot_image_rows({f"real ({source['dataset']})": list(real), "generated": generated}, args.out / FIGURE)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    named_configs, updates = parse_command_line(args.config)
    config = composed_config(named_configs, updates)
    seed_everything(args.seed)
    images, source = training_images(config, args.training_images, args.image_size)
    sizes = SMALL_SIZES if args.size == "small" else {}
    model = LatentDiffusion(LatentDiffusionOptions(image_size=args.image_size, **sizes))
    description = {"options": model.description(), "vae_steps": args.vae_steps, "diffusion_steps": args.diffusion_steps,
                   "vae_batch": args.vae_batch, "diffusion_batch": args.diffusion_batch, "seed": args.seed, **source}
    args.out.mkdir(parents=True, exist_ok=True)
    state = train(args, model, images, description)
    image_format = PNG_FORMAT if is_image_dataset(config["dataset"]) else H5_FORMAT
    write_images(args, model, state, image_format, source)
    write_figure(args, images, image_format, source)
    print(f"{args.n_images} images written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
