"""What every dataset source provides to the DataModule: a cache key and a cache builder."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Source(Protocol):
    """A dataset that can build the decode-once cache (see `jointcap.data.cache`).

    `build(out)` runs on rank 0 only (inside `prepare_data`): it downloads and verifies
    what is missing, then writes `out/{train,val,test}` with `cache.write_split` /
    `cache.SplitWriter` and finally `out/info.json` with `cache.write_info`, holding at least
    ``{"name": str, "num_classes": int, "class_names": [str], "part_names": [str] | None}``.
    `cache_key()` names the cache folder; it changes whenever the cached content would.
    """

    name: str

    def cache_key(self) -> str: ...

    def build(self, out: Path) -> None: ...
