"""Importable pieces for the multi-process tests (spawned ranks import them by name)."""

from __future__ import annotations

import os
from pathlib import Path

from jointcap.data.synthetic import SyntheticSource
from jointcap.lit_module import JointCaptionModule


class FailOnRankOne(JointCaptionModule):
    """The joint module, except that rank 1 raises in its first training step."""

    def training_step(self, batch, batch_idx):
        if self.global_rank == 1:
            raise RuntimeError("injected failure on rank 1")
        return super().training_step(batch, batch_idx)


class CountedSynthetic(SyntheticSource):
    """The synthetic source, appending the building process's id to `<cache>/../builds.log`."""

    def build(self, out: Path) -> None:
        with open(Path(out).parent / "builds.log", "a") as f:
            f.write(f"{os.getpid()}\n")
        super().build(out)
