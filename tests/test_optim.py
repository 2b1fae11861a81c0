"""The learning-rate schedule: warm-up and cosine, and the self-critical epochs' own rate (`model.optim.scst_lr`)."""

from __future__ import annotations

import math

import pytest
from torch import nn

from jointcap.config import OptimConfig
from jointcap.training.optim import optimizer_and_schedule


def _rates(
    c: OptimConfig, total: int, scst_start: int | None, cosine_steps: int | None = None
) -> list[tuple[float, float]]:
    """(encoder, rest) learning rate at each of `total` steps."""
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    out = optimizer_and_schedule(net, net[0], c, total, scst_start, cosine_steps)
    assert isinstance(out, dict)
    opt = out["optimizer"]
    sched = out["lr_scheduler"]["scheduler"] if "lr_scheduler" in out else None  # type: ignore[typeddict-item]
    rates = []
    for _ in range(total):
        rates.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        opt.step()
        if sched is not None:
            sched.step()
    return rates


def test_without_scst_lr_the_schedule_is_one_cosine_whatever_the_phase() -> None:
    c = OptimConfig(lr=1e-3, warmup_steps=10, encoder_lr_mult=0.5)
    plain = _rates(c, 100, None)
    assert _rates(c, 100, 80) == plain  # knowing the phase changes nothing without scst_lr
    assert plain[9][1] == pytest.approx(1e-3) and plain[9][0] == pytest.approx(5e-4)  # end of warm-up
    assert plain[99][1] < 1e-6  # cosine to ~0


def test_scst_lr_gives_the_self_critical_steps_their_own_cosine() -> None:
    c = OptimConfig(lr=1e-3, warmup_steps=10, encoder_lr_mult=0.5)
    own = OptimConfig(lr=1e-3, warmup_steps=10, encoder_lr_mult=0.5, scst_lr=3e-5)
    plain, split = _rates(c, 100, None), _rates(own, 100, 80)
    assert split[:80] == plain[:80]  # the cross-entropy steps are untouched
    assert split[80][1] == pytest.approx(3e-5) and split[80][0] == pytest.approx(1.5e-5)  # encoder at its multiple
    assert split[90][1] == pytest.approx(3e-5 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert all(a[1] >= b[1] for a, b in zip(split[80:], split[81:], strict=False))  # decaying
    assert split[99][1] < 3e-7


def test_scst_lr_with_a_constant_schedule_is_constant_in_each_phase() -> None:
    rates = _rates(OptimConfig(lr=1e-3, scheduler="none", scst_lr=1e-4), 20, 15)
    assert {r[1] for r in rates[:15]} == {1e-3} and rates[15][1] == pytest.approx(1e-4) == rates[19][1]


def test_cosine_steps_let_a_short_run_follow_a_longer_runs_curve() -> None:
    """A 90-step run whose cosine spans 120 steps: its first 80 steps equal the 120-step run's (the cross-entropy
    epochs of the default 12-epoch schedule), then its own self-critical rate."""
    c = OptimConfig(lr=1e-3, warmup_steps=10)
    long, short = _rates(c, 120, None), _rates(OptimConfig(lr=1e-3, warmup_steps=10, scst_lr=3e-5), 90, 80, 120)
    assert short[:80] == long[:80] and short[80][1] == pytest.approx(3e-5)
    assert _rates(c, 90, None, 90) == _rates(c, 90, None)  # the run's own length is the default
