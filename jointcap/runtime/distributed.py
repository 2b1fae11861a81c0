"""Keeping Lightning's DDP and Hydra's multirun out of each other's way.

Lightning's plain `ddp` starts the other ranks by re-running this process's command line
(`_SubprocessScriptLauncher`). For a single run that is fine: Lightning passes rank 0's
`hydra.run.dir` to the ranks, so they share its run folder. Under `python -m jointcap.run -m …`
it is not: every rank would run the whole sweep. `sweep_safe(cfg)` therefore swaps such a
strategy for its `ddp_spawn` variant in a multirun (with a warning) and refuses what has no
spawn variant. Under SLURM (`hydra/launcher=slurm`: srun starts one task per device) or
torchrun the ranks are started outside, Lightning does not re-launch, and nothing changes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
# plain-ddp aliases (Lightning's StrategyRegistry) → the same strategy with spawned ranks
SPAWN_VARIANTS = {
    "auto": "ddp_spawn",
    "ddp": "ddp_spawn",
    "ddp_find_unused_parameters_true": "ddp_spawn_find_unused_parameters_true",
    "ddp_find_unused_parameters_false": "ddp_spawn_find_unused_parameters_false",
}


class SweepStrategyError(ValueError):
    """The trainer's strategy would re-run the whole sweep on every rank and has no spawn variant."""


def in_multirun() -> bool:
    """Whether this process is a job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def relaunches_command_line(trainer: Any) -> bool:
    """Whether `trainer.fit` would start its other ranks by re-running this command line."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher as FabricLauncher
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    strategy = trainer.strategy
    env = getattr(strategy, "cluster_environment", None)
    external = env is not None and env.creates_processes_externally  # srun / torchrun started the ranks
    launcher = getattr(strategy, "launcher", None)
    return (
        isinstance(launcher, (_SubprocessScriptLauncher, FabricLauncher))
        and not external
        and trainer.num_devices * trainer.num_nodes > 1
    )


def spawn_variant(strategy: Any) -> Any | None:
    """The spawn-launched equivalent of a strategy config (an alias or a DDPStrategy node), or None."""
    if strategy is None or isinstance(strategy, str):
        return SPAWN_VARIANTS.get(strategy or "auto")
    if isinstance(strategy, DictConfig) and str(strategy.get("_target_", "")).endswith("DDPStrategy"):
        node = OmegaConf.create(OmegaConf.to_container(strategy))
        node.start_method = "spawn"
        return node
    return None


def sweep_safe(cfg: DictConfig) -> DictConfig:
    """In a multirun, `cfg` with a command-line-relaunching strategy swapped for its spawn variant (else `cfg`)."""
    if not in_multirun() or (cfg.trainer.get("devices") == 1 and cfg.trainer.get("num_nodes", 1) == 1):
        return cfg
    probe = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False)
    if not relaunches_command_line(probe):
        return cfg
    strategy = cfg.trainer.get("strategy")
    spawn = spawn_variant(strategy)
    if spawn is None:
        raise SweepStrategyError(
            f"trainer.strategy={strategy} starts its ranks by re-running the command line, so under `-m` every rank "
            "would run the whole sweep. Run the sweep with hydra/launcher=slurm (srun starts the ranks), use "
            "trainer.strategy=ddp_spawn, or start single runs without -m."
        )
    log.warning(
        "trainer.strategy=%s would re-run the whole sweep on every rank (Lightning re-launches the command "
        "line): using %s for this sweep job instead. On a cluster use hydra/launcher=slurm, where srun starts "
        "the ranks and plain ddp is kept.",
        strategy,
        spawn if isinstance(spawn, str) else "DDPStrategy(start_method=spawn)",
    )
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.strategy = spawn
    return cfg
