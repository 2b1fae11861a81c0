"""The shared multimodal embedding: the map that both heads read and both losses train."""

from __future__ import annotations

import torch
from torch import nn


class Embedding(nn.Module):
    """1×1 projection of the encoder map to D channels, with BN and ReLU (non-negative, so CAMs are additive)."""

    def __init__(self, in_channels: int, dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.dim = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)  # (B, D, h, w)
