"""KnowSAM's learnable prompts for SAM (taozh2017/KnowSAM `Model/prompt.py`, `Super_Prompt`).

For each class, a small network reads SAM's image embedding and writes the sparse prompt tokens of
that class: the two corner tokens of each of its boxes, given to the mask decoder in place of the
prompt encoder's embedding of box coordinates (`box_decoder_embedding`):

    U-Net ConvBlock -> DownBlock -> ConvBlock -> DownBlock (dropout 0.1, width C) -> 1x1 convolution
    -> global average pooling -> Linear(C, 4 n C) -> GELU -> dropout -> Linear(4 n C, 2 n C) -> dropout

with C the prompt embedding width (SAM's 256) and n the boxes per class. The dense prompt is the
fused map itself, through SAM's own mask encoder (models/prompted_sam.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from models.unet import ConvBlock, DownBlock

PROMPT_DROPOUT = 0.1  # box_decoder_embedding: ConvBlock / DownBlock / FeedForward dropout
CORNERS_PER_BOX = 2  # a box is two corner tokens, as SAM's prompt encoder embeds one
HIDDEN_WIDTH_RATIO = 4  # FeedForward hidden features: box_nums x C x 4
PROMPT_DOWNSAMPLING = 4  # two DownBlocks: the embedding's side must be a multiple of 4


class BoxPromptGenerator(nn.Module):
    """One class's box tokens from SAM's image embedding: (B, C, h, w) -> (B, 2n, C)."""

    def __init__(self, width: int, boxes: int) -> None:
        super().__init__()
        self.tokens = CORNERS_PER_BOX * boxes
        self.features = nn.Sequential(
            ConvBlock(width, width, PROMPT_DROPOUT), DownBlock(width, width, PROMPT_DROPOUT),
            ConvBlock(width, width, PROMPT_DROPOUT), DownBlock(width, width, PROMPT_DROPOUT),
            nn.Conv2d(width, width, kernel_size=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.token_head = nn.Sequential(
            nn.Linear(width, boxes * width * HIDDEN_WIDTH_RATIO), nn.GELU(), nn.Dropout(PROMPT_DROPOUT),
            nn.Linear(boxes * width * HIDDEN_WIDTH_RATIO, self.tokens * width), nn.Dropout(PROMPT_DROPOUT))

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, 2n, C)"""
        return rearrange(self.token_head(self.features(image_embedding)), "b (n c) -> b n c", n=self.tokens)


class LearnablePrompts(nn.Module):
    """A BoxPromptGenerator per class: (B, C, h, w) image embedding -> (B, K, 2n, C) box tokens."""

    def __init__(self, n_classes: int, width: int, boxes: int) -> None:
        super().__init__()
        self.generators = nn.ModuleList(BoxPromptGenerator(width, boxes) for _ in range(n_classes))

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, K, 2n, C)"""
        return torch.stack([generator(image_embedding) for generator in self.generators], dim=1)
