"""Known noise in a run's output, filtered by its exact message or logger (never all warnings or all of a library).

What goes, and why:
* Lightning's "💡 Tip: … litlogger / litmodels" advertisements, its "Trainer already configured with model
  summary callbacks" and "Loading `train_dataloader` to estimate number of stepping batches" notes: they say
  nothing about this run.
* `isinstance(treespec, LeafSpec)` is deprecated: a deprecation inside Lightning (its _pytree helper) on the
  current torch, not in this project's code; nothing a user can act on.
* "Precision bf16-mixed is not supported by the model summary": the summary's size estimate assumes 32 bits,
  which is what it prints; the warning adds nothing.
* "You have overridden `on_before_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`"
  (and `on_after_…`): the module's own hooks (caption trimming, uint8 → float on the device) are meant to run;
  Lightning says it will use them, which is what we want, on every evaluate and test.
* alembic's INFO lines ("Context impl SQLiteImpl", "Will assume non-transactional DDL") when an Optuna sweep
  keeps its study in a database: alembic is held at WARNING.
"""

from __future__ import annotations

import logging
import warnings

LIGHTNING_INFO_NOISE = (
    "💡 Tip:",
    "Trainer already configured with model summary callbacks",
    "Loading `train_dataloader` to estimate number of stepping batches",
)
WARNING_NOISE = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision bf16-mixed is not supported by the model summary",
    r"You have overridden `on_(before|after)_batch_transfer` in `LightningModule` but have passed in a `LightningD",
)
# the loggers Lightning's rank_zero_info writes through (lightning_utilities' module logger is set to one of these)
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class DropMessages(logging.Filter):
    """Drop log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_known_noise() -> None:
    """Install the filters above (idempotent: a second call adds nothing)."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(LIGHTNING_INFO_NOISE))
    for pattern in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("alembic").setLevel(logging.WARNING)
