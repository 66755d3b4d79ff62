"""Forward + backward time per training episode for each model x encoder, and the heads' share.

For every encoder the same episode (B = 1, S = 1, 256 x 256 by default) is timed for the encoder
alone (its forward on support + query and the backward of a scalar of its features) and for each
full model (forward with alignment, weighted cross-entropy + alignment loss, backward). Repeats
are interleaved round-robin so that a busy machine slows every configuration alike; the heads'
share (PSM, MCAM, prototypes, scoring, losses) is (model step - encoder step) / encoder step,
from the fastest round of each (the least disturbed by other load on a shared machine). The
optimiser step is not timed. Run from the repository root:

    python bench/bench_models.py --encoders resnet18 resnet50 resnet101 --repeats 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import MODEL_REGISTRY, build_model  # noqa: E402
from models.encoder import ResNetEncoder  # noqa: E402
from models.losses import alignment_loss, weighted_cross_entropy  # noqa: E402

ENCODER_ONLY = "encoder"
# the prototype models: built on the ResNet encoder, with the alignment branch `model_step` trains
# (UniverSeg has neither; bench/bench_fold_speed.py compares it)
ENCODER_MODELS = sorted(name for name, entry in MODEL_REGISTRY.items() if entry.has_alignment_branch)


def synthetic_episode(size: int, shots: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    support_masks = torch.zeros(1, shots, size, size)
    support_masks[..., size // 4 : size // 2, size // 4 : 3 * size // 4] = 1.0
    query_labels = torch.zeros(1, size, size, dtype=torch.long)
    query_labels[:, size // 3 : size // 2, size // 4 : size // 2] = 1
    return {
        "support_images": torch.randn(1, shots, 3, size, size, generator=generator),
        "support_masks": support_masks,
        "query_images": torch.randn(1, 3, size, size, generator=generator),
        "query_labels": query_labels,
    }


def encoder_step(encoder: ResNetEncoder, episode: dict[str, torch.Tensor]) -> None:
    images = torch.cat([episode["support_images"].flatten(0, 1), episode["query_images"]])
    encoder.zero_grad(set_to_none=True)
    encoder(images).square().mean().backward()


def model_step(model: torch.nn.Module, episode: dict[str, torch.Tensor]) -> None:
    model.zero_grad(set_to_none=True)
    output = model(episode["support_images"], episode["support_masks"], episode["query_images"], return_alignment=True)
    loss = weighted_cross_entropy(output.logits, episode["query_labels"])
    loss = loss + alignment_loss(output.alignment_logits, episode["support_masks"])
    loss.backward()


def bench_encoder(encoder_name: str, model_names: list[str], episode, repeats: int, output_stride: int):
    runners = {ENCODER_ONLY: (encoder_step, ResNetEncoder(encoder_name, output_stride))}
    for name in model_names:
        runners[name] = (model_step, build_model(name, encoder=encoder_name, output_stride=output_stride))
    times: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for name, (step, module) in runners.items():
            start = time.perf_counter()
            step(module, episode)
            if repeat:
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["resnet18", "resnet50", "resnet101"])
    parser.add_argument("--models", nargs="+", default=ENCODER_MODELS, choices=ENCODER_MODELS)
    parser.add_argument("--size", type=int, default=256, help="image side (pixels)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    episode = synthetic_episode(args.size, args.shots)
    print(f"device cpu, threads {args.threads}, B=1, S={args.shots}, {args.size}x{args.size}, "
          f"output stride {args.output_stride}, fastest of {args.repeats} interleaved rounds")
    print(f"{'encoder':<10} {'model':<8} {'step s':>8} {'heads / encoder':>16}")
    for encoder_name in args.encoders:
        fastest = bench_encoder(encoder_name, args.models, episode, args.repeats, args.output_stride)
        base = fastest[ENCODER_ONLY]
        print(f"{encoder_name:<10} {ENCODER_ONLY:<8} {base:>8.3f} {'-':>16}")
        for name in args.models:
            share = (fastest[name] - base) / base
            print(f"{encoder_name:<10} {name:<8} {fastest[name]:>8.3f} {share:>15.1%}", flush=True)


if __name__ == "__main__":
    main()
