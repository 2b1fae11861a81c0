"""The shared multimodal embedding: the map that both heads read and both losses train."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SKIP_SOURCES = ("stem", "output")


def _projection(in_channels: int, dim: int, dropout: float) -> nn.Sequential:
    """1×1 conv + BN + ReLU (non-negative, so CAMs are additive) + channel dropout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, dim, kernel_size=1, bias=False),
        nn.BatchNorm2d(dim),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
    )


class Embedding(nn.Module):
    """1×1 projection of the encoder map to the D shared channels, and optionally `skip_dim` more for the captioner.

    The returned map is (B, D + S, h, w): channels [0, D) are the shared embedding (the classifier and its CAM read
    only these, and both losses train them); channels [D, D + S) are a captioner-only skip from the encoder, so the
    captioner can keep what the class does not need (e.g. a body colour) without the classifier's weights on it.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 256,
        dropout: float = 0.0,
        skip_dim: int = 0,
        skip_from: str = "stem",
        stem_channels: int = 64,
    ) -> None:
        super().__init__()
        if skip_from not in SKIP_SOURCES:
            raise ValueError(f"model.embedding.skip_from must be one of {SKIP_SOURCES}, got {skip_from!r}")
        self.proj = _projection(in_channels, dim, dropout)
        skip_in = stem_channels if skip_from == "stem" else in_channels
        self.skip = _projection(skip_in, skip_dim, dropout) if skip_dim > 0 else None
        self.skip_from = skip_from
        self.dim = dim  # shared channels
        self.out_dim = dim + skip_dim  # what the captioner reads

    def forward(self, features: torch.Tensor, stem: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, C, h, w) → (B, D + S, h, w); `stem` (B, 64, H', W') feeds the skip when skip_from=stem,
        average-pooled to the h×w grid."""
        emb = self.proj(features)  # (B, D, h, w)
        if self.skip is None:
            return emb
        src = features
        if self.skip_from == "stem":
            if stem is None:
                raise ValueError("skip_from=stem needs the encoder's stem map")
            src = F.adaptive_avg_pool2d(stem, (int(features.shape[-2]), int(features.shape[-1])))
        return torch.cat([emb, self.skip(src)], dim=1)  # (B, D + S, h, w)
