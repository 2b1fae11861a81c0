"""Shared pieces of the body-colour diagnostics (experiments/body_colour_{context,readout}.py, probe_body_colour.py).

The default data's class fixes head colour, wing colour and pattern; the body colour varies inside a class. These
helpers read a cached split's images, write the class template the diagnostics teacher-force, and fit the
logistic read-out they all report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from jointcap.data import cache


def split_images(split: cache.SplitData, start: int, stop: int) -> torch.Tensor:
    """Images start..stop of a cached split as a uint8 (B, 3, S, S) tensor."""
    return torch.from_numpy(np.array(split.images[start:stop])).permute(0, 3, 1, 2).contiguous()


def class_template(c: dict) -> str:
    """The class template every reference of the class starts with (no body colour): "this bird has … head"."""
    return f"this bird has {c['wing']} {c['pattern']} wings, a {c['head']} head"


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    k: int,
    lr: float,
    steps: Sequence[int],
    batch: int | None,
) -> list[float]:
    """A logistic read-out x (N, D) → y in k classes fitted by Adam (seed 0); its test accuracy after each of
    `steps`. batch None: full batch with a 1e-3 L2 penalty (a probe of what x holds); an int: that many random
    examples a step and no penalty (a read-out learnt the way the captioner learns)."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.zeros(x.shape[1], k, requires_grad=True), torch.zeros(k, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    out = []
    for step in range(1, max(steps) + 1):
        idx = torch.randint(0, len(x), (batch,), generator=g) if batch else torch.arange(len(x))
        opt.zero_grad()
        (F.cross_entropy(x[idx] @ w + b, y[idx]) + (1e-3 * w.pow(2).sum() if batch is None else 0)).backward()
        opt.step()
        if step in steps:
            out.append(float(((xt @ w + b).argmax(1) == yt).float().mean()))
    return out


def standardise(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b standardised by a's per-feature mean and spread."""
    mu, sd = a.mean(0), a.std(0) + 1e-6
    return (a - mu) / sd, (b - mu) / sd
