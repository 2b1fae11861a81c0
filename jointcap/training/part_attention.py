"""Supervised word attention (`model.loss.part_attention`), Liu et al.'s "attention correctness" (AAAI 2017) with
part masks for the entity alignments: at each caption step whose word names a part, the cross-entropy between the
named part's mask pooled to the feature map (a distribution over cells) and the captioner's attention there."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jointcap.config import ConfigError

_EPS = 1e-8


class PartMasksUnavailableError(ConfigError):
    """`model.loss.part_attention > 0` on data without per-image part masks (CUB, Flowers)."""


def refuse_without_masks(has_masks: bool, source: str) -> None:
    """The named error for part_attention on data that stores no part masks."""
    if not has_masks:
        raise PartMasksUnavailableError(
            f"model.loss.part_attention > 0 needs per-image part masks and the caption words that name parts; the "
            f"{source} data has none (use data=synthetic or data=synthetic_hard, or model.loss.part_attention=0)"
        )


def part_targets(
    part_masks: torch.Tensor, token_part: torch.Tensor, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (B, P, S, S) and the part each step names (B, T; -1 none) → (targets (B, T, h·w), valid (B, T)): the
    named part's share of pixels in each cell, normalised; a step is valid when it names a part the image shows."""
    pooled = F.adaptive_avg_pool2d(part_masks.float(), grid).flatten(2)  # (B, P, L)
    total = pooled.sum(-1)  # (B, P)
    dist = pooled / total.clamp(min=_EPS)[..., None]
    idx = token_part.clamp(min=0)  # (B, T)
    targets = dist.gather(1, idx[..., None].expand(-1, -1, dist.shape[-1]))  # (B, T, L)
    valid = (token_part >= 0) & (total.gather(1, idx) > 0)
    return targets, valid


def loss(
    alphas: torch.Tensor, token_part: torch.Tensor, part_masks: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Mean over the steps that name a visible part of −Σ_cells target · log α (alphas (B, T, h·w), token_part
    (B, T) aligned with them); a mean like the caption loss, so its weight means the same in every batch. 0 (with
    a gradient path) when no step names a part."""
    targets, valid = part_targets(part_masks, token_part, grid)
    ce = -(targets * alphas.float().clamp(min=_EPS).log()).sum(-1)  # (B, T)
    v = valid.float()
    return (ce * v).sum() / v.sum().clamp(min=1.0)
