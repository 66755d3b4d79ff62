"""Model registry and builder (docs/DESIGN.md "Models"): every model from a name and plain options.

`build_model("psmnet", encoder="resnet18", n_splits=2)` checks every option against the model's
options dataclass (whose defaults follow docs/METHOD.md) and lets the model's entry build its
network: the prototype models (PANet, SSL-ALPNet, PSMnet) build a `ResNetEncoder` from the encoder
arguments and the shared prototype base of models/base.py; UniverSeg builds its own network and
reads no encoder argument (it refuses pretrained weights, which it has none of). Each entry also
records how the model's original code trains it (alignment loss weight, number of steps,
optimiser), which config.py uses as defaults, and whether the model has PANet's alignment branch at all: a model
without one gets weight 0 from every loss recipe and refuses any other (`check_alignment_weight`).

The semi-supervised methods (models/semi_supervised.py) have a registry of their own,
`SEMI_SUPERVISED_REGISTRY`: a method is one file in models/ and one line there;
`build_semi_supervised_method(name, in_channels, n_classes, **options)` builds it, and
`model_track(name)` says which track (few-shot episodes or semi-supervised batches) a name trains
in. The option helpers below (`model_options`, `original_steps`, ...) answer for both registries.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from models.alpnet import ALPNet, ALPNetOptions
from models.base import FewShotOutput, FewShotSegmenter
from models.encoder import ResNetEncoder
from models.knowsam import IMAGE_SIZE_MULTIPLE as KNOWSAM_IMAGE_SIZE_MULTIPLE
from models.knowsam import ORIGINAL_GROUP_OPTIMIZERS as KNOWSAM_GROUP_OPTIMIZERS
from models.knowsam import KnowSAM, KnowSAMOptions
from models.mean_teacher import MeanTeacher, MeanTeacherOptions
from models.mgcc import MGCC, MGCCOptions, mgcc_iterations
from models.panet import PANet, PANetOptions
from models.psmnet import PSMNet, PSMNetOptions
from models.scpnet import SCPNet, SCPNetOptions
from models.semi_supervised import SemiSupervisedMethod
from models.supervised_segmentation import SupervisedOptions, SupervisedSegmentation
from models.unet import DOWNSAMPLING as UNET_DOWNSAMPLING
from models.universeg import UniverSeg, UniverSegOptions

ORIGINAL = "original"
WITH_ALIGNMENT = "with_alignment"
LOSS_RECIPES = (ORIGINAL, WITH_ALIGNMENT)
FEW_SHOT = "few_shot"  # episodic training of a support/query model (train.py's episodes)
SEMI_SUPERVISED = "semi_supervised"  # labelled + unlabelled slice batches (train.py's two-stream batches)


@dataclass(frozen=True)
class EncoderArguments:
    """The ResNet encoder a prototype model is built on (models/encoder.py)."""

    name: str
    output_stride: int
    feature_channels: int
    pretrained: str | os.PathLike | None


@dataclass(frozen=True)
class ModelEntry:
    """How to build a model, and how its original code trains it."""

    options_type: type
    build: Callable[[EncoderArguments, object], nn.Module]  # (encoder arguments, options) -> the model
    original_alignment_weight: float  # weight of PANet's alignment loss in the original training script
    original_steps: int  # training steps of the original training script
    original_optimizer: str = "sgd"  # the original's optimiser (experiment/optimisation.py OPTIMIZERS)
    has_alignment_branch: bool = True  # False: the model cannot produce PANet's alignment loss


def _on_resnet(build_segmenter: Callable[[ResNetEncoder, object], FewShotSegmenter]):
    """A prototype model's build: its ResNet encoder from the arguments, then the model on it."""
    def build(encoder: EncoderArguments, options) -> FewShotSegmenter:
        return build_segmenter(ResNetEncoder(encoder.name, encoder.output_stride, encoder.feature_channels,
                                             encoder.pretrained), options)
    return build


def _build_universeg(encoder: EncoderArguments, options: UniverSegOptions) -> UniverSeg:
    """UniverSeg's own network; the ResNet arguments describe nothing in it, and no weights exist for it here."""
    if encoder.pretrained is not None:
        raise ValueError(f"universeg builds its own network and has no pretrained weights here (got "
                         f"model.pretrained={encoder.pretrained!r}); pass model.pretrained=None")
    return UniverSeg(options)


MODEL_REGISTRY: dict[str, ModelEntry] = {
    # PANet under SSL-ALPNet's protocol: its alignment loss (usealign) and SSL-ALPNet's 100k steps
    "panet": ModelEntry(PANetOptions, _on_resnet(PANet), original_alignment_weight=1.0, original_steps=100_000),
    # SSL-ALPNet's config_ssl_upload.py: usealign=True, n_steps=100100
    "alpnet": ModelEntry(ALPNetOptions, _on_resnet(ALPNet), original_alignment_weight=1.0, original_steps=100_000),
    # PSMnet's tr.py: `loss = query_loss + 0*align_loss + 0*query_loss1`; train.sh: NSTEP=50100
    "psmnet": ModelEntry(PSMNetOptions,
                         _on_resnet(lambda encoder, options: PSMNet(encoder, encoder.feature_channels, options)),
                         original_alignment_weight=0.0, original_steps=50_000),
    # UniverSeg (no alignment branch): its training code is not public; Adam as in its paper (AdamW
    # here, with the framework's weight decay); PSMnet's 50k steps, so that the paper-configuration
    # comparison gives both the same number of episodes
    "universeg": ModelEntry(UniverSegOptions, _build_universeg, original_alignment_weight=0.0,
                            original_steps=50_000, original_optimizer="adamw", has_alignment_branch=False),
}


@dataclass(frozen=True)
class SemiSupervisedEntry:
    """How to build a semi-supervised method, and how its original script trains it."""

    options_type: type
    build: Callable[[int, int, object], SemiSupervisedMethod]  # (in_channels, n_classes, options) -> the method
    original_steps: int  # --max_iterations of the original training script
    image_size_multiple: int = UNET_DOWNSAMPLING  # image sides the method's networks need multiples of
    # what the original script sets otherwise than SSL4MIS's, by config.py's TRACK_DEFAULTS keys
    original_training: dict[str, float | int] = dataclasses.field(default_factory=dict)
    # the original's iterations for the labelled share of the training images (None: original_steps, any share)
    steps_for_labelled_share: Callable[[float], int] | None = None
    # {parameter group: its optimiser settings otherwise than the run's} (config.py's group_optimizers)
    original_group_optimizers: dict[str, dict[str, float | str]] = dataclasses.field(default_factory=dict)


SEMI_SUPERVISED_REGISTRY: dict[str, SemiSupervisedEntry] = {
    # SSL4MIS train_fully_supervised_2D.py: labelled slices only (the lower and upper bounds)
    "supervised": SemiSupervisedEntry(SupervisedOptions, SupervisedSegmentation, original_steps=30_000),
    # SSL4MIS train_mean_teacher_2D.py
    "mean_teacher": SemiSupervisedEntry(MeanTeacherOptions, MeanTeacher, original_steps=30_000),
    # SCP-Net SCPNettrain.py: --max_iterations 40000, --base_lr 0.1, validation every 100 iterations
    "scpnet": SemiSupervisedEntry(SCPNetOptions, SCPNet, original_steps=40_000,
                                  original_training=dict(sgd_lr=0.1, validate_every=100)),
    # MGCC train.py: batch 4 + 4, SGD lr 0.01 poly; max_iterations = int(40000 x semi_percent)
    "mgcc": SemiSupervisedEntry(MGCCOptions, MGCC, original_steps=mgcc_iterations(1.0),
                                original_training=dict(batch_size=8), steps_for_labelled_share=mgcc_iterations),
    # KnowSAM train_semi_SAM_ACDC.py: --max_iterations 50000, batch 12 + 12, SGD lr 0.01 for the
    # networks, Adam lr 1e-4 for SAM's trained parts (the poly power 1: config.py's `knowsam`); image
    # sides of multiples of 64 px: SAM's 16 px patches, then its prompt generators' two 2x2 poolings
    "knowsam": SemiSupervisedEntry(KnowSAMOptions, KnowSAM, original_steps=50_000,
                                   image_size_multiple=KNOWSAM_IMAGE_SIZE_MULTIPLE,
                                   original_group_optimizers=KNOWSAM_GROUP_OPTIMIZERS),
}


def model_track(name: str) -> str:
    """FEW_SHOT or SEMI_SUPERVISED: the registry `name` is in (unknown names raise, listing both)."""
    if name in MODEL_REGISTRY:
        return FEW_SHOT
    if name in SEMI_SUPERVISED_REGISTRY:
        return SEMI_SUPERVISED
    raise ValueError(f"unknown model {name!r}; few-shot models: {sorted(MODEL_REGISTRY)}; semi-supervised "
                     f"methods: {sorted(SEMI_SUPERVISED_REGISTRY)}")


def uses_unlabelled(name: str) -> bool:
    """Whether a semi-supervised method trains on unlabelled slices (False for few-shot models)."""
    return model_track(name) == SEMI_SUPERVISED and SEMI_SUPERVISED_REGISTRY[name].build.uses_unlabelled


def _lookup(name: str) -> ModelEntry | SemiSupervisedEntry:
    return MODEL_REGISTRY[name] if model_track(name) == FEW_SHOT else SEMI_SUPERVISED_REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """The option names of model `name` with their defaults."""
    return {field.name: field.default for field in dataclasses.fields(_lookup(name).options_type)}


def original_steps(name: str, labelled_share: float | None = None) -> int:
    """Training steps of model `name`'s original training script; for a method whose script scales
    them by the labelled share of the training images (MGCC), those of `labelled_share` when given."""
    scaled = getattr(_lookup(name), "steps_for_labelled_share", None)
    return scaled(labelled_share) if scaled is not None and labelled_share is not None else _lookup(name).original_steps


def original_training(name: str) -> dict[str, float | int]:
    """The values model `name`'s original script sets otherwise than its track's defaults (config.py
    TRACK_DEFAULTS keys, e.g. SCP-Net's {"sgd_lr": 0.1, "validate_every": 100}); empty for most."""
    return dict(getattr(_lookup(name), "original_training", {}))


def original_group_optimizers(name: str) -> dict[str, dict[str, float | str]]:
    """{parameter group: optimiser settings} that model `name`'s original sets otherwise than for its
    other parameters (KnowSAM: Adam for SAM beside SGD for its networks); empty for most."""
    return {group: dict(settings) for group, settings in getattr(_lookup(name), "original_group_optimizers", {}).items()}


def original_optimizer(name: str) -> str:
    """The optimiser model `name` is trained with in its original code or paper ("sgd" | "adamw")."""
    return getattr(_lookup(name), "original_optimizer", "sgd")


def alignment_loss_weight(name: str, loss_recipe: str) -> float:
    """Weight of the alignment loss for model `name` under a loss recipe: "original" (the model's
    own training script) or "with_alignment" (weight 1 for every model that has an alignment
    branch; 0 for a model without one, under every recipe)."""
    if loss_recipe not in LOSS_RECIPES:
        raise ValueError(f"loss_recipe must be one of {LOSS_RECIPES}, got {loss_recipe!r}")
    entry = _lookup(name)
    if not getattr(entry, "has_alignment_branch", False):
        return 0.0
    return entry.original_alignment_weight if loss_recipe == ORIGINAL else 1.0


def check_alignment_weight(name: str, weight: float) -> None:
    """Refuse a positive alignment loss weight for a model that cannot produce the alignment loss."""
    if weight and not getattr(_lookup(name), "has_alignment_branch", False):
        raise ValueError(f"model {name!r} has no alignment branch, so it cannot be trained with "
                         f"alignment_loss_weight={weight}; pass alignment_loss_weight=0 (or leave it to loss_recipe)")


def minimum_feature_size(name: str, options: dict[str, object]) -> int:
    """Side of the smallest feature grid model `name` runs on with `options` (ALPNet: its largest
    pooling window; models without windows: one feature pixel). Invalid options raise as in `build_model`."""
    return getattr(_resolved_options(name, options), "minimum_feature_size", 1)


def image_size_multiple(name: str, options: dict[str, object]) -> int:
    """Image sides model `name` needs to be multiples of, with `options` (UniverSeg: 2 ** (encoder
    stages - 1); the semi-supervised U-Nets: 16; models that upsample their logits to any size: 1)."""
    if model_track(name) == SEMI_SUPERVISED:
        _resolved_options(name, options)
        return SEMI_SUPERVISED_REGISTRY[name].image_size_multiple
    return getattr(_resolved_options(name, options), "image_size_multiple", 1)


def _resolved_options(name: str, options: dict[str, object]) -> object:
    """The options dataclass of model `name`; unknown options raise a ValueError listing the valid ones."""
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {sorted(valid)}")
    return _lookup(name).options_type(**options)


def build_model(
    name: str,
    *,
    encoder: str = "resnet101",
    output_stride: int = 8,
    feature_channels: int = 256,
    pretrained: str | os.PathLike | None = None,
    **options,
) -> nn.Module:
    """A few-shot model by registry name; unknown names or options raise a ValueError listing the valid ones.
    The encoder arguments build the ResNet encoder of a prototype model; UniverSeg does not read them."""
    if model_track(name) != FEW_SHOT:
        raise ValueError(f"{name!r} is a semi-supervised method: build it with build_semi_supervised_method")
    model_config = _resolved_options(name, options)
    return _lookup(name).build(EncoderArguments(encoder, output_stride, feature_channels, pretrained), model_config)


def build_semi_supervised_method(name: str, in_channels: int, n_classes: int, **options) -> SemiSupervisedMethod:
    """A semi-supervised method by registry name, for images of `in_channels` and `n_classes` classes
    (background included); unknown names or options raise a ValueError listing the valid ones."""
    if model_track(name) != SEMI_SUPERVISED:
        raise ValueError(f"{name!r} is a few-shot model: build it with build_model")
    return SEMI_SUPERVISED_REGISTRY[name].build(in_channels, n_classes, _resolved_options(name, options))


__all__ = ["FEW_SHOT", "LOSS_RECIPES", "MODEL_REGISTRY", "SEMI_SUPERVISED", "SEMI_SUPERVISED_REGISTRY", "FewShotOutput",
           "alignment_loss_weight", "build_model", "build_semi_supervised_method", "model_track", "uses_unlabelled",
           "check_alignment_weight", "image_size_multiple", "minimum_feature_size", "model_options",
           "original_group_optimizers", "original_steps", "original_training"]
