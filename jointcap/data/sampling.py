"""Training order and per-sample randomness that a resumed run reproduces exactly.

The shuffle of an epoch is a function of (seed, epoch) only, and every sample's random choices
(which caption, which flip and shift) are a function of (seed, epoch, index) only: nothing
depends on the global RNG, on worker seeds or on how many batches came before. The training
loader is *stateful* in Lightning's sense (`state_dict` / `load_state_dict`), so a checkpoint
taken mid-epoch records how many batches were consumed, and the resumed run skips exactly
those (without loading them) and sees the same remaining batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's random choices in one epoch."""
    return int(np.random.SeedSequence((seed, epoch, index)).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(DistributedSampler):
    """DistributedSampler whose items are `(index, sample_seed)`, able to start part-way into an epoch.

    Being a DistributedSampler, Lightning keeps it under DDP (it does not inject its own), calls
    `set_epoch` every epoch, and each rank draws its share of one (seed, epoch) permutation.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0  # items to leave out at the start of the next pass only

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        indices = list(super().__iter__())[skip:]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])


class ResumableLoader(DataLoader):
    """A training DataLoader over an `EpochSampler` whose position in the epoch travels in checkpoints.

    Its iterator is lazy: the underlying iterator (and so the worker prefetch that reads the
    sampler) starts at the first batch, after Lightning has set the epoch.
    """

    sampler: EpochSampler

    def __init__(self, dataset: Dataset, *, sampler: Any = None, **kwargs: Any) -> None:
        if isinstance(sampler, SequentialSampler):  # Lightning's overfit_batches re-makes the loader unshuffled
            sampler = EpochSampler(dataset, shuffle=False)
        super().__init__(dataset, sampler=sampler, **kwargs)
        if not isinstance(self.sampler, EpochSampler) or self.batch_size is None:
            raise TypeError("ResumableLoader needs sampler=EpochSampler(...) and a batch_size")
        self._consumed = 0  # batches handed out in the current pass (skipped ones included)
        self._resume_at = 0  # batches to skip at the start of the next pass

    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its batches the training loop has taken."""
        return {"epoch": int(self.sampler.epoch), "batches": int(self._consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch after its consumed batches (a finished epoch leaves nothing to skip)."""
        if int(state["batches"]) < len(self):
            self.sampler.set_epoch(int(state["epoch"]))
            self._resume_at = int(state["batches"])

    def __iter__(self) -> Any:  # DataLoader's iterator, counting what it yields
        skip, self._resume_at = self._resume_at, 0
        assert self.batch_size is not None  # batches of a fixed size (the resumable sampler counts items)
        self.sampler.skip = skip * self.batch_size
        self._consumed = skip
        for batch in super().__iter__():
            self._consumed += 1
            yield batch
