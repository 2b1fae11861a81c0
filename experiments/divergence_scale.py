"""How strongly does each disagreement divergence pull at equal λ? Gradient norms at typical (P, Q).

P (the CAM as a distribution) and Q (the mean attention) over an 8×8 map are drawn as softmaxes of
random logits at three sharpness levels; the table gives the mean L2 norm of ∂D/∂(attention logits)
and ∂D/∂(CAM values) relative to Jensen–Shannon's. `python experiments/divergence_scale.py`
"""

from __future__ import annotations

import torch

from jointcap.losses import DIVERGENCES, cam_distribution, divergence


def grad_norms(kind: str, sharp: float, n: int = 2000, locs: int = 64, seed: int = 0) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed)
    cam = (torch.randn(n, locs, generator=g) * sharp).exp().requires_grad_(True)  # positive CAM values
    logits = (torch.randn(n, locs, generator=g) * sharp).requires_grad_(True)
    d = divergence(cam_distribution(cam.view(n, 8, 8)), logits.softmax(-1), kind).sum()
    gc, gq = torch.autograd.grad(d, (cam, logits))
    gc = gc * cam.detach()  # the CAM side as d/d log(cam): scale-free
    return float(gq.norm(dim=1).mean()), float(gc.norm(dim=1).mean())


def main() -> None:
    print("| divergence | sharpness | ∂/∂attention logits (× JS) | ∂/∂log CAM (× JS) |")
    print("|---|---|---|---|")
    for sharp in (0.5, 1.0, 2.0):
        ref = grad_norms("js", sharp)
        for kind in DIVERGENCES:
            q, c = grad_norms(kind, sharp)
            print(f"| {kind} | {sharp} | {q / ref[0]:.2f} | {c / ref[1]:.2f} |")


if __name__ == "__main__":
    main()
