"""The training losses: caption CE, the CAM disagreement loss, the attention regulariser.

Our reading of Yoon et al. (2020): P = the ground-truth class's CAM, ReLU'd and normalised
over the h×w locations; Q = the captioner's attention averaged over the real (non-pad)
words; L_dis = D(P, Q) for a divergence D, with a switch for which side gets gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DIVERGENCES = ("js", "kl", "l1", "l2", "cosine")
# which parameters the disagreement loss trains: all of them; only the captioner's; only the classifier's class
# weights (the CAM side's own parameters); only the shared embedding and the encoder below it; the CAM's whole side
# (class weights, embedding, encoder) with the attention a fixed target
GRAD_TO = ("both", "captioner", "classifier", "embedding", "cam")
Q_SOURCES = ("attention", "oracle")  # Q: the captioner's attention, or the true class-part masks (positive control)
ATTENTION_WORDS = ("all", "content")  # which generated words' attention Q averages
_EPS = 1e-8


def caption_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Token-level cross-entropy, ignoring padding: logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id, label_smoothing=label_smoothing
    )


def cam_distribution(cam: torch.Tensor) -> torch.Tensor:
    """ReLU the CAM (B, h, w) and normalise it to a distribution (B, L); an all-zero CAM becomes uniform."""
    pos = cam.float().flatten(1).relu() + _EPS
    return pos / pos.sum(dim=1, keepdim=True)


def mean_attention(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the attention (B, T, L) over the steps where `mask` (B, T) is true → (B, L)."""
    m = mask.to(alphas.dtype)[..., None]
    return (alphas * m).sum(1) / m.sum(1).clamp(min=1.0)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy (nats) of distributions p (B, L) → (B,); log(L) when uniform."""
    return -torch.xlogy(p.float(), p.float()).sum(-1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (torch.xlogy(p, p) - torch.xlogy(p, q.clamp(min=_EPS))).sum(-1)


def divergence(p: torch.Tensor, q: torch.Tensor, kind: str = "js") -> torch.Tensor:
    """Per-sample divergence between distributions p, q (B, L) → (B,); 0 iff p == q."""
    p, q = p.float(), q.float()
    if kind == "js":
        m = 0.5 * (p + q)
        return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    if kind == "kl":
        return _kl(p, q)
    if kind == "l1":
        return (p - q).abs().sum(-1)
    if kind == "l2":
        return (p - q).pow(2).sum(-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(p, q, dim=-1)
    raise ValueError(f"model.loss.divergence must be one of {DIVERGENCES}, got {kind!r}")


class DisagreementLoss(nn.Module):
    """D(P_cam, Q_attention), averaged over the batch; `grad_to` = captioner detaches P, classifier detaches Q.

    Detaching one side is not all `grad_to` means: the other side's map still depends on the shared embedding.
    `JointCaptionModule` also cuts those paths (`cut_gradient`, and the CAM of a detached embedding or of
    detached class weights), so each option trains exactly the parameters it names (docs/method.md).
    """

    def __init__(self, kind: str = "js", grad_to: str = "both") -> None:
        super().__init__()
        if kind not in DIVERGENCES:
            raise ValueError(f"model.loss.divergence must be one of {DIVERGENCES}, got {kind!r}")
        if grad_to not in GRAD_TO:
            raise ValueError(f"model.loss.grad_to must be one of {GRAD_TO}, got {grad_to!r}")
        self.kind, self.grad_to = kind, grad_to

    def forward(self, cam: torch.Tensor, attention: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        # cam (B, h, w) of the true class; attention (B, L) already averaged over words; valid (B,) rows to average
        p = cam_distribution(cam)
        q = attention.float()
        if self.grad_to == "captioner":
            p = p.detach()
        elif self.grad_to in ("classifier", "cam"):
            q = q.detach()
        d = divergence(p, q, self.kind)  # (B,)
        if valid is None:
            return d.mean()
        return (d * valid).sum() / valid.sum().clamp(min=1)


def cut_gradient(term: torch.Tensor, through: Sequence[torch.Tensor]) -> torch.Tensor:
    """`term` (a scalar) with the same value, but no gradient along any path that passes through `through`.

    Adds -Σ ⟨t - t.detach(), ∂term/∂t⟩: zero in value, and its gradient cancels exactly the part of term's
    gradient that flows through each t (for a parameter t: all of it). It costs one extra backward pass from
    `term` to `through`; the rest of the graph is left to the caller's backward.
    """
    ts = [t for t in through if t.requires_grad]
    if not term.requires_grad or not ts:
        return term
    grads = torch.autograd.grad(term, ts, retain_graph=True, allow_unused=True)
    parts = [((t - t.detach()) * g.detach()).sum() for t, g in zip(ts, grads, strict=True) if g is not None]
    return term - torch.stack(parts).sum() if parts else term


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Xu et al.'s regulariser: every location's attention, summed over words, should be ≈ 1."""
    m = mask.to(alphas.dtype)[..., None]
    n_words = m.sum(1)  # (B, 1)
    total = (alphas * m).sum(1) * alphas.shape[-1] / n_words.clamp(min=1.0)  # (B, L), 1 at uniform coverage
    return (1.0 - total).pow(2).mean()


def warmup(weight: float, progress_epochs: float, warmup_epochs: float) -> float:
    """Linear warm-up of a loss weight over the first `warmup_epochs` (fractional epochs)."""
    if warmup_epochs <= 0:
        return weight
    return weight * min(1.0, max(0.0, progress_epochs / warmup_epochs))
