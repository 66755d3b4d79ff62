"""SAM prompted once per class with a fused map and learnable box tokens (KnowSAM `trainer.py`, `Trainer.train`).

KnowSAM's SAM: the package's image encoder, prompt encoder and mask decoder, with adapters in the
blocks of the encoder and of the decoder's transformer (models/sam_adapters.py), and a learnable
prompt generator per class (models/sam_prompts.py). For every class k of a batch of slices:

- the image embedding (B, 256, H/16, W/16) of the slices, repeated to SAM's three channels as
  KnowSAM's data loader repeats them; the position embedding, made for 1024 px images, resized
  bicubically to the slices' grid, as KnowSAM's encoder does at every forward pass;
- sparse prompt: class k's learnable box tokens, read from the image embedding;
- dense prompt: channel k of the given mask logits (the fused map, detached by the caller),
  resized bilinearly to 4x the embedding's grid and encoded by SAM's mask encoder;
- the mask decoder's single-mask output (B, 1, H/4, W/4).

The K masks, one per class, are SAM's class logits, resized bilinearly to the slices' size. The
classes run as one batch of B x K prompts (the decoder treats each prompt alone, so this equals
KnowSAM's loop over the classes).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder

from models.sam_adapters import add_adapters, adapter_parameters
from models.sam_builder import IMAGE_CHANNELS, PROMPT_WIDTH, build_sam_parts, load_sam_checkpoint
from models.sam_prompts import LearnablePrompts

MASK_PROMPT_SCALE = 4  # SAM's mask prompts and low-resolution masks have 4x the embedding's side


class PromptedSAM(nn.Module):
    """SAM's parts and the learnable prompts: (slices, mask logits) -> SAM's class logits."""

    def __init__(self, image_encoder: ImageEncoderViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 prompts: LearnablePrompts) -> None:
        super().__init__()
        self.image_encoder, self.prompt_encoder, self.mask_decoder = image_encoder, prompt_encoder, mask_decoder
        self.prompts = prompts

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 3, H, W) -> image embedding (B, 256, H/16, W/16); H and W multiples of 16."""
        if images.shape[1] not in (1, IMAGE_CHANNELS):
            raise ValueError(f"SAM reads grey or RGB images, got {images.shape[1]} channels")
        encoder = self.image_encoder
        tokens = encoder.patch_embed(images.expand(-1, IMAGE_CHANNELS, -1, -1))  # (B, h, w, D)
        position = F.interpolate(rearrange(encoder.pos_embed, "1 h w d -> 1 d h w"), size=tokens.shape[1:3],
                                 mode="bicubic", align_corners=False)
        tokens = tokens + rearrange(position, "1 d h w -> 1 h w d")
        for block in encoder.blocks:
            tokens = block(tokens)
        return encoder.neck(rearrange(tokens, "b h w d -> b d h w"))

    def forward(self, images: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """images (B, 1 or 3, H, W), mask_logits (B, K, H, W) -> SAM's logits (B, K, H, W)."""
        n_classes = mask_logits.shape[1]
        embedding = self.embed(images)  # (B, C, h, w)
        grid = embedding.shape[-2:]
        box_tokens = rearrange(self.prompts(embedding), "b k n c -> (b k) n c")
        masks = F.interpolate(mask_logits, size=(MASK_PROMPT_SCALE * grid[0], MASK_PROMPT_SCALE * grid[1]),
                              mode="bilinear", align_corners=False)
        _, mask_embedding = self.prompt_encoder(points=None, boxes=None,
                                                masks=rearrange(masks, "b k h w -> (b k) 1 h w"))
        # The package's decoder repeats ONE image's embedding for every prompt and adds the dense
        # prompt to it; here each prompt has its own slice, so the slice's embedding comes in with
        # the dense prompt and the repeated one is zero: the decoder's input is the same sum.
        per_prompt = repeat(embedding, "b c h w -> (b k) c h w", k=n_classes) + mask_embedding
        low_resolution, _ = self.mask_decoder(
            image_embeddings=torch.zeros_like(embedding[:1]), image_pe=self.prompt_encoder.pe_layer(tuple(grid))[None],
            sparse_prompt_embeddings=box_tokens, dense_prompt_embeddings=per_prompt, multimask_output=False)
        logits = rearrange(low_resolution, "(b k) 1 h w -> b k h w", k=n_classes)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters that train: every one from random weights; the adapters and prompts over a checkpoint."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]


def build_prompted_sam(n_classes: int, size: str, boxes_per_class: int,
                       checkpoint: str | os.PathLike | None = None) -> PromptedSAM:
    """KnowSAM's SAM at SAM_SIZES[size] with adapters and a prompt generator per class; with a
    checkpoint, SAM's weights are loaded and frozen, and only the adapters and the prompts train
    (KnowSAM's Trainer: requires_grad for names with "Adapter" or "super_prompt")."""
    image_encoder, prompt_encoder, mask_decoder = build_sam_parts(size)
    add_adapters(image_encoder, mask_decoder)
    sam = PromptedSAM(image_encoder, prompt_encoder, mask_decoder, LearnablePrompts(n_classes, PROMPT_WIDTH,
                                                                                   boxes_per_class))
    if checkpoint is not None:
        load_sam_checkpoint(sam, checkpoint, size)
        for part in (sam.image_encoder, sam.prompt_encoder, sam.mask_decoder):
            part.requires_grad_(False)
        for parameter in adapter_parameters(sam):
            parameter.requires_grad_(True)
    return sam
