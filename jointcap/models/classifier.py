"""GAP + linear classifier, and its class activation maps (Zhou et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn


class CAMClassifier(nn.Module):
    """Logits from the global-average-pooled embedding; CAM = class weights applied at every location."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        pooled = emb.mean(dim=(2, 3))  # (B, D)
        return self.fc(self.dropout(pooled))  # (B, K)

    def cam(self, emb: torch.Tensor, classes: torch.Tensor, weights_grad: bool = True) -> torch.Tensor:
        """CAM of `classes` (B,) over the map (B, D, h, w) → (B, h, w); its spatial mean + the class bias is the logit.

        Zhou et al.'s CAM carries no bias: a shift shared by all locations changes no logit difference, so
        with the bias inside, a disagreement loss on the ReLU'd CAM could flatten it at no cost to the
        cross-entropy (the bias absorbs the shift). `weights_grad=False`: the class weights get no gradient
        through this CAM (a loss on it then trains only the embedding).
        """
        w = self.fc.weight[classes]  # (B, D)
        w = w if weights_grad else w.detach()
        return torch.einsum("bd,bdhw->bhw", w, emb)
