"""The shared feature encoder (docs/METHOD.md "Encoder"; docs/PROTOCOL.md "Training").

A torchvision ResNet trunk (stem + layer1..layer4, no pooling head, no ASPP) with a configurable
output stride, followed by a 1x1 convolution to `feature_channels`. The paper's default is the
DeepLabv3 ResNet-101 trunk at output stride 8 (COCO weights), which gives 32 x 32 features for a
256 x 256 slice; resnet50 and resnet18 are lighter options for ablations and CPU tests.

Output strides below 32 replace the strides of layer3 / layer4 by dilations, as DeepLab does.
torchvision's `replace_stride_with_dilation` only exists for Bottleneck ResNets, so the BasicBlock
trunk (resnet18) is dilated here by editing its convolutions in place.
"""
from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torchvision
from torchvision.models import resnet

logger = logging.getLogger(__name__)

TRUNK_BUILDERS: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet18": resnet.resnet18,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
}
# output stride -> which of (layer2, layer3, layer4) trade their stride for a dilation
DILATED_LAYERS: dict[int, tuple[bool, bool, bool]] = {
    8: (False, True, True),
    16: (False, False, True),
    32: (False, False, False),
}
TRUNK_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
# prefixes that wrap a trunk's keys in saved checkpoints (DeepLabv3 models, DataParallel)
STRIPPED_KEY_PREFIXES = ("module.", "backbone.")


class PretrainedWeightsError(RuntimeError):
    """Encoder weights were requested but cannot be found, read or matched to the trunk."""


def _dilate_basic_layer(layer: nn.Sequential, dilation: int, previous_dilation: int) -> None:
    """Turn the stride-2 entry of a BasicBlock layer into stride 1 with dilated 3x3 convolutions.

    Mirrors torchvision's Bottleneck behaviour: the first block's first conv keeps the previous
    dilation, every later 3x3 conv uses the new one.
    """
    for block_index, block in enumerate(layer):
        for conv_name in ("conv1", "conv2"):
            conv = getattr(block, conv_name)
            rate = previous_dilation if (block_index == 0 and conv_name == "conv1") else dilation
            conv.stride = (1, 1)
            conv.dilation = (rate, rate)
            conv.padding = (rate, rate)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def build_trunk(name: str, output_stride: int) -> tuple[nn.Module, int]:
    """A ResNet trunk (no avgpool / fc) with the requested output stride, and its output channels."""
    if name not in TRUNK_BUILDERS:
        raise ValueError(f"unknown encoder {name!r}; valid encoders: {sorted(TRUNK_BUILDERS)}")
    if output_stride not in DILATED_LAYERS:
        raise ValueError(f"output_stride must be one of {sorted(DILATED_LAYERS)}, got {output_stride}")
    dilated = DILATED_LAYERS[output_stride]
    if name == "resnet18":
        network = TRUNK_BUILDERS[name](weights=None)
        dilation = 1
        for layer_name, use_dilation in zip(("layer2", "layer3", "layer4"), dilated):
            if use_dilation:
                previous_dilation = dilation
                dilation *= 2
                _dilate_basic_layer(getattr(network, layer_name), dilation, previous_dilation)
    else:
        network = TRUNK_BUILDERS[name](weights=None, replace_stride_with_dilation=list(dilated))
    channels = network.fc.in_features
    trunk = nn.Sequential(
        network.conv1, network.bn1, network.relu, network.maxpool,
        network.layer1, network.layer2, network.layer3, network.layer4,
    )
    return trunk, channels


def _trunk_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only trunk parameters (ResNet or DeepLabv3 backbone naming), renamed to the Sequential."""
    index_of = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    trunk_state = {}
    for key, value in state.items():
        for prefix in STRIPPED_KEY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        head, _, rest = key.partition(".")
        if head in index_of:
            trunk_state[f"{index_of[head]}.{rest}"] = value
    return trunk_state


def _torchvision_weights(name: str, weights_name: str):
    """The torchvision weights enum entry for `weights_name` (ResNet or DeepLabv3 backbone)."""
    candidates = {}
    for model_name in (name, f"deeplabv3_{name}"):
        try:
            enum = torchvision.models.get_model_weights(model_name)
        except ValueError:
            continue
        candidates.update({member: enum[member] for member in enum.__members__})
    if weights_name not in candidates:
        raise PretrainedWeightsError(
            f"unknown pretrained weights {weights_name!r} for {name}; valid names: {sorted(candidates)}, "
            "None, or the path of a local .pth file"
        )
    return candidates[weights_name]


def load_pretrained_state(name: str, pretrained: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict for the trunk from a local file or a torchvision weights name (cache first).

    Never downloads silently in an offline setting: a failed download raises an error that says
    where to put the file or how to pass a local path instead.
    """
    path = Path(pretrained)
    if path.suffix in (".pth", ".pt") or path.is_file():
        if not path.is_file():
            raise PretrainedWeightsError(f"{path}: pretrained weights file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError) as error:
            raise PretrainedWeightsError(f"{path}: cannot be read as a PyTorch state dict ({error})") from None
        for wrapper_key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
                state = state[wrapper_key]
        return state
    weights = _torchvision_weights(name, str(pretrained))
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise PretrainedWeightsError(
            f"cannot load the {pretrained} weights of {name}: not in the cache ({cached}) and the download from "
            f"{weights.url} failed ({error}). Fetch that file elsewhere and copy it to {cached}, or pass "
            f"model.pretrained=<path of a local .pth file>, or train from scratch with model.pretrained=None"
        ) from None


class ResNetEncoder(nn.Module):
    """ResNet trunk + 1x1 projection: (N, 3, H, W) -> (N, C, H / output_stride, W / output_stride)."""

    def __init__(
        self,
        name: str = "resnet101",
        output_stride: int = 8,
        feature_channels: int = 256,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.output_stride = output_stride
        self.feature_channels = feature_channels
        self.trunk, trunk_channels = build_trunk(name, output_stride)
        if pretrained is not None:
            trunk_state = _trunk_state_dict(load_pretrained_state(name, pretrained))
            expected = set(self.trunk.state_dict())
            missing = sorted(expected - set(trunk_state))
            if missing:
                raise PretrainedWeightsError(
                    f"pretrained weights {pretrained} do not fit the {name} trunk: {len(missing)} missing "
                    f"parameters, e.g. {missing[:3]}"
                )
            self.trunk.load_state_dict({key: trunk_state[key] for key in expected})
            logger.info("loaded %s trunk weights from %s", name, pretrained)
        self.projection = nn.Conv2d(trunk_channels, feature_channels, kernel_size=1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> features (N, C, h, w) with h = H / output_stride."""
        return self.projection(self.trunk(images))
