"""SAM's parts from the `segment-anything` package, at each size KnowSAM's SAM can take, and its checkpoint.

As the package's `build_sam.py` (and KnowSAM's `Model/sam/build_sam.py`), one table holds every
size and one function builds the image encoder (a ViT), the prompt encoder and the mask decoder
from the package's classes, with KnowSAM's choices: absolute position embeddings only
(`use_rel_pos=False`; made for SAM's 1024 px images and resized to the actual grid at every forward
pass, models/prompted_sam.py), windows of 14 tokens except in the global-attention blocks, 256-wide
prompts, a two-layer two-way transformer in the decoder.

- "vit_b": SAM ViT-B (768 wide, 12 blocks, 12 heads), the size of `sam_vit_b_01ec64.pth`, the
  checkpoint the original starts from (`load_sam_checkpoint`);
- "small": 4 blocks 192 wide with 3 heads, for training from random weights where no checkpoint
  is at hand (this project's default: a third co-trained network, not SAM's knowledge).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from models.sam_adapters import Adapter

PATCH_SIZE = 16  # vit_patch_size: image embedding side = image side / 16
SAM_IMAGE_SIZE = 1024  # the image side SAM's position embeddings (64 x 64) and checkpoints are made for
PROMPT_WIDTH = 256  # prompt_embed_dim: image embedding channels, prompt tokens, decoder width
IMAGE_CHANNELS = 3  # SAM's patch embedding reads RGB; grey slices are repeated (models/prompted_sam.py)
WINDOW_SIZE = 14  # window attention outside the global-attention blocks
MLP_RATIO = 4
LAYER_NORM_EPS = 1e-6
MASK_ENCODER_CHANNELS = 16  # mask_in_chans
DECODER_DEPTH, DECODER_MLP_WIDTH, DECODER_HEADS = 2, 2048, 8  # TwoWayTransformer(depth, mlp_dim, num_heads)
MULTIMASK_OUTPUTS = 3  # num_multimask_outputs (KnowSAM reads the single-mask output)
IOU_HEAD_DEPTH, IOU_HEAD_WIDTH = 3, 256
RELATIVE_POSITION_SUFFIXES = (".rel_pos_h", ".rel_pos_w")  # in SAM's checkpoints; KnowSAM builds without them
SAM_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")  # the checkpoint's top-level modules


@dataclass(frozen=True)
class SamSize:
    """The image encoder's size (the prompt encoder and mask decoder are SAM's at every size)."""

    width: int  # encoder_embed_dim
    depth: int  # encoder_depth
    heads: int  # encoder_num_heads
    global_attention_blocks: tuple[int, ...]  # encoder_global_attn_indexes


SAM_SIZES = {
    "vit_b": SamSize(width=768, depth=12, heads=12, global_attention_blocks=(2, 5, 8, 11)),
    "small": SamSize(width=192, depth=4, heads=3, global_attention_blocks=(1, 3)),
}


class SamCheckpointError(ValueError):
    """A SAM checkpoint that is missing or does not fit the SAM it should initialise."""


def build_sam_parts(size: str) -> tuple[ImageEncoderViT, PromptEncoder, MaskDecoder]:
    """The package's image encoder, prompt encoder and mask decoder of SAM_SIZES[size], randomly
    initialised; built for SAM's 1024 px images, they run on any multiple of 16 (models/prompted_sam.py)."""
    if size not in SAM_SIZES:
        raise ValueError(f"unknown SAM size {size!r}; sizes: {sorted(SAM_SIZES)}")
    encoder_size, grid = SAM_SIZES[size], SAM_IMAGE_SIZE // PATCH_SIZE
    image_encoder = ImageEncoderViT(
        img_size=SAM_IMAGE_SIZE, patch_size=PATCH_SIZE, in_chans=IMAGE_CHANNELS, embed_dim=encoder_size.width,
        depth=encoder_size.depth, num_heads=encoder_size.heads, mlp_ratio=MLP_RATIO, out_chans=PROMPT_WIDTH,
        qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=LAYER_NORM_EPS), use_rel_pos=False,
        window_size=WINDOW_SIZE, global_attn_indexes=encoder_size.global_attention_blocks)
    prompt_encoder = PromptEncoder(embed_dim=PROMPT_WIDTH, image_embedding_size=(grid, grid),
                                   input_image_size=(SAM_IMAGE_SIZE, SAM_IMAGE_SIZE),
                                   mask_in_chans=MASK_ENCODER_CHANNELS)
    mask_decoder = MaskDecoder(
        transformer_dim=PROMPT_WIDTH, num_multimask_outputs=MULTIMASK_OUTPUTS, iou_head_depth=IOU_HEAD_DEPTH,
        iou_head_hidden_dim=IOU_HEAD_WIDTH,
        transformer=TwoWayTransformer(depth=DECODER_DEPTH, embedding_dim=PROMPT_WIDTH, mlp_dim=DECODER_MLP_WIDTH,
                                      num_heads=DECODER_HEADS))
    return image_encoder, prompt_encoder, mask_decoder


def load_sam_checkpoint(sam: nn.Module, path: str | os.PathLike, size: str) -> None:
    """Load SAM's weights from `path` (a state dict of the package's `Sam`, e.g. sam_vit_b_01ec64.pth)
    into the `image_encoder`, `prompt_encoder` and `mask_decoder` of `sam`, built at SAM_SIZES[size];
    its other parameters (adapters, prompts) keep theirs. The checkpoint's relative position tables
    are dropped, as KnowSAM drops them. A missing file, a file that is
    not a state dict, a missing or unexpected key or a shape that differs raise SamCheckpointError,
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SamCheckpointError(f"SAM checkpoint {path}: no such file; KnowSAM starts from SAM ViT-B's weights "
                                 f"(sam_vit_b_01ec64.pth, facebookresearch/segment-anything): pass its path, or "
                                 f"model_options.sam_checkpoint=None to train the small SAM from random weights")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: the message names it and the reason
        raise SamCheckpointError(f"SAM checkpoint {path}: not a readable PyTorch state dict ({error})") from error
    if not isinstance(checkpoint, dict) or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise SamCheckpointError(f"SAM checkpoint {path}: expected a state dict (parameter name -> tensor) of SAM, "
                                 f"got {type(checkpoint).__name__}")
    adapter_keys = {f"{name}.{key}" for name, module in sam.named_modules() if isinstance(module, Adapter)
                    for key in module.state_dict()}
    expected = {key: value for key, value in sam.state_dict().items()
                if key.startswith(SAM_PARTS) and key not in adapter_keys}
    weights = {key: value for key, value in checkpoint.items() if not key.endswith(RELATIVE_POSITION_SUFFIXES)}
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    mismatched = [f"{key}: checkpoint {tuple(weights[key].shape)}, model {tuple(expected[key].shape)}"
                  for key in sorted(expected.keys() & weights.keys()) if weights[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        problems = [f"{len(missing)} missing key(s) {missing[:3]}" if missing else "",
                    f"{len(unexpected)} unexpected key(s) {unexpected[:3]}" if unexpected else "",
                    f"{len(mismatched)} shape mismatch(es) {mismatched[:3]}" if mismatched else ""]
        raise SamCheckpointError(f"SAM checkpoint {path} does not fit this SAM (size {size!r}): "
                                 f"{'; '.join(problem for problem in problems if problem)}; KnowSAM's checkpoint is "
                                 f"SAM ViT-B's (sam_vit_b_01ec64.pth), loaded with model_options.sam_size='vit_b'")
    sam.load_state_dict(weights, strict=False)

