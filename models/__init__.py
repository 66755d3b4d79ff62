"""Model registry and builder (DESIGN.md "Models"): every model from a name and plain options.

`build_model("psmnet", encoder="resnet18", n_splits=2)` builds the encoder, checks every option
against the model's options dataclass (whose defaults follow PSMNET.md) and returns the model.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import torch.nn as nn

from models.alpnet import ALPNet, ALPNetOptions
from models.base import FewShotOutput, FewShotSegmenter
from models.encoder import ResNetEncoder
from models.panet import PANet, PANetOptions
from models.psmnet import PSMNet, PSMNetOptions


def _build_panet(encoder: ResNetEncoder, options: PANetOptions) -> FewShotSegmenter:
    return PANet(encoder, options)


def _build_alpnet(encoder: ResNetEncoder, options: ALPNetOptions) -> FewShotSegmenter:
    return ALPNet(encoder, options)


def _build_psmnet(encoder: ResNetEncoder, options: PSMNetOptions) -> FewShotSegmenter:
    return PSMNet(encoder, encoder.feature_channels, options)


# name -> (options dataclass, builder from an encoder and options)
MODEL_BUILDERS: dict[str, tuple[type, Callable[..., FewShotSegmenter]]] = {
    "panet": (PANetOptions, _build_panet),
    "alpnet": (ALPNetOptions, _build_alpnet),
    "psmnet": (PSMNetOptions, _build_psmnet),
}


def model_options(name: str) -> dict[str, object]:
    """The option names of model `name` with their defaults."""
    options_type, _ = _lookup(name)
    return {field.name: field.default for field in dataclasses.fields(options_type)}


def _lookup(name: str) -> tuple[type, Callable[..., FewShotSegmenter]]:
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name]


def build_model(
    name: str,
    *,
    encoder: str = "resnet101",
    output_stride: int = 8,
    feature_channels: int = 256,
    pretrained: str | os.PathLike | None = None,
    **options,
) -> nn.Module:
    """A few-shot model by registry name; unknown names or options raise a ValueError listing the valid ones."""
    options_type, builder = _lookup(name)
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {sorted(valid)}")
    model_config = options_type(**options)
    return builder(ResNetEncoder(encoder, output_stride, feature_channels, pretrained), model_config)


__all__ = ["MODEL_BUILDERS", "FewShotOutput", "build_model", "model_options"]
