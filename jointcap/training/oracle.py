"""The positive control's Q: the image's ground-truth class-defining part masks, as a perfectly localising
captioner's attention would be (`model.loss.q_source=oracle`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jointcap.config import ConfigError


class OracleUnavailableError(ConfigError):
    """`model.loss.q_source=oracle` on data without per-image part masks or class-defining parts."""


def oracle_q(class_mask: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-part masks (B, S, S) → (Q (B, h·w), valid (B,)): each cell's share of class-part pixels, pooled to the
    feature map's `grid` and normalised to a distribution. An image with no class part visible has no oracle:
    `valid` is False there (its Q is uniform, and the loss leaves it out)."""
    pooled = F.adaptive_avg_pool2d(class_mask.float()[:, None], grid).flatten(1)  # (B, h·w)
    total = pooled.sum(1, keepdim=True)
    valid = total[:, 0] > 0
    q = torch.where(total > 0, pooled / total.clamp(min=1e-12), torch.full_like(pooled, 1.0 / pooled.shape[1]))
    return q, valid


def refuse_without_masks(has_masks: bool, source: str) -> None:
    """The named error for q_source=oracle on data that stores no part masks (CUB, Flowers)."""
    if not has_masks:
        raise OracleUnavailableError(
            f"model.loss.q_source=oracle needs per-image part masks and the class-defining parts; the {source} "
            "data has none (use data=synthetic or data=synthetic_hard, or model.loss.q_source=attention)"
        )
