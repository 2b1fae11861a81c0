"""The optimizer and learning-rate schedule: AdamW (encoder at its own rate), linear warm-up then cosine."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn

from jointcap.config import OptimConfig


def optimizer_and_schedule(
    net: nn.Module,
    encoder: nn.Module,
    c: OptimConfig,
    total_steps: int,
    scst_start: int | None = None,
    cosine_steps: int | None = None,
) -> OptimizerLRScheduler:
    """AdamW over `net` with `encoder`'s parameters at lr · encoder_lr_mult; per step: a linear warm-up over
    `warmup_steps` (at most half the run), then a cosine decay to 0 at `total_steps` (scheduler=none: constant).
    With `c.scst_lr` and the step the self-critical epochs start at (`scst_start`), those steps get their own
    cosine from scst_lr (the encoder's times encoder_lr_mult) to 0 at `total_steps` instead (constant at
    scst_lr with scheduler=none). `cosine_steps`: where the cosine reaches 0 (default `total_steps`; past it, 0):
    a run's first epochs can follow a longer run's curve (`model.optim.cosine_epochs`)."""
    enc = list(encoder.parameters())
    enc_ids = {id(p) for p in enc}
    rest = [p for p in net.parameters() if id(p) not in enc_ids]
    groups = [{"params": enc, "lr": c.lr * c.encoder_lr_mult}, {"params": rest, "lr": c.lr}]
    opt = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
    total = max(1, total_steps)
    own = c.scst_lr is not None and scst_start is not None and 0 <= scst_start < total
    if c.scheduler == "none" and not own:
        return {"optimizer": opt}
    start = scst_start if own and scst_start is not None else math.inf
    warm = min(int(c.warmup_steps), total // 2)
    span = max(1, cosine_steps if cosine_steps is not None else total)

    def factor(step: int) -> float:
        if step >= start and c.scst_lr is not None:  # the self-critical phase's own rate, relative to lr
            done = (step - start) / (total - start)
            return (
                c.scst_lr / c.lr * (1.0 if c.scheduler == "none" else 0.5 * (1.0 + math.cos(math.pi * min(1.0, done))))
            )
        if c.scheduler == "none":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, span - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
