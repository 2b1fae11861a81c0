"""The optimizer and learning-rate schedule: AdamW (encoder at its own rate), linear warm-up then cosine."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn

from jointcap.config import OptimConfig


def optimizer_and_schedule(
    net: nn.Module, encoder: nn.Module, c: OptimConfig, total_steps: int
) -> OptimizerLRScheduler:
    """AdamW over `net` with `encoder`'s parameters at lr · encoder_lr_mult; per step: a linear warm-up over
    `warmup_steps` (at most half the run), then a cosine decay to 0 at `total_steps` (scheduler=none: constant)."""
    enc = list(encoder.parameters())
    enc_ids = {id(p) for p in enc}
    rest = [p for p in net.parameters() if id(p) not in enc_ids]
    groups = [{"params": enc, "lr": c.lr * c.encoder_lr_mult}, {"params": rest, "lr": c.lr}]
    opt = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
    if c.scheduler == "none":
        return {"optimizer": opt}
    total = max(1, total_steps)
    warm = min(int(c.warmup_steps), total // 2)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
