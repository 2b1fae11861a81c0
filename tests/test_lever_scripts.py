"""experiments/describe_lever.sh: the overrides each seed's run gets, and that Hydra composes them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from tests.conftest import ROOT
from tests.test_configs import _compose

SCRIPT = ROOT / "experiments" / "describe_lever.sh"


def _calls(tmp_path: Path, **env: str) -> list[list[str]]:
    """Run the script with a stand-in python that records each call (one line of tab-separated arguments)."""
    log, fake = tmp_path / "calls.log", tmp_path / "py"
    fake.write_text(f'#!/bin/bash\nline=$(printf "%s\\t" "$@")\necho "$line" >> {log}\n')
    fake.chmod(0o755)
    full = {**os.environ, "PY": str(fake), "OUT": str(tmp_path / "out"), "SEEDS": "3", **env}
    subprocess.run(["bash", str(SCRIPT)], env=full, check=True, timeout=60, capture_output=True)
    return [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()]


def test_epochs_keeps_every_epochs_checkpoint_and_from_starts_each_seed_from_its_own(tmp_path: Path) -> None:
    calls = _calls(tmp_path, EPOCHS="1", FROM="ce/s{seed}/epoch=7.ckpt", EXTRA="model.loss.scst_repeat_penalty=1.0")
    run = next(c for c in calls if c[:2] == ["-m", "jointcap.run"])
    assert "ckpt_path='ce/s3/epoch=7.ckpt'" in run and "seed=3" in run  # quoted: Lightning's names hold '='
    overrides = [a for a in run[2:] if not a.startswith("hydra.")]
    assert "model.loss.scst_repeat_penalty=1.0" in overrides
    cfg = _compose(overrides)  # Hydra parses and composes them as the run would
    assert cfg.ckpt_path == "ce/s3/epoch=7.ckpt"
    epochs = OmegaConf.to_container(cfg.callbacks.epochs, resolve=False)
    assert epochs == {
        "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
        "monitor": None,
        "dirpath": "${hydra:runtime.output_dir}/epochs",
        "save_top_k": -1,
    }
    assert [c[:2] for c in calls].count(["-m", "jointcap.evaluate"]) == 2  # greedy and beam 3
    (tmp_path / "plain").mkdir()
    plain = next(c for c in _calls(tmp_path / "plain") if c[:2] == ["-m", "jointcap.run"])
    assert not any(a.startswith(("+callbacks.", "ckpt_path=")) for a in plain)
