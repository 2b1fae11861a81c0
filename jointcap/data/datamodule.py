"""One LightningDataModule for every source: prepare (rank 0) → cache → tokenizer → splits → batches."""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from jointcap.data import cache, part_words
from jointcap.data.sampling import EpochSampler, ResumableLoader
from jointcap.data.source import Source
from jointcap.data.tokenizer import Tokenizer, TokenizerError

log = logging.getLogger(__name__)


def init_worker(worker_id: int) -> None:
    """A loader worker ignores SIGTERM/SIGINT: a signal sent to the whole process group (`timeout`, a scheduler,
    Ctrl-C) must reach the main process, which saves and stops; a worker that died of it would fail the batch
    instead. Lightning's worker seeding (`seed_everything(workers=True)`) still runs."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    if os.environ.get("PL_SEED_WORKERS") == "1":  # what Lightning adds itself when a loader has no worker_init_fn
        pl_worker_init_function(worker_id)


def stop_loader_workers() -> None:
    """At exit: stop the DataLoader workers still running. They ignore SIGTERM (`init_worker`), and
    multiprocessing's own exit hook terminates daemonic children with SIGTERM and then joins them: with a loader
    iterator still referenced at exit (persistent workers after a stop during validation) it waited forever.
    Each live iterator gets torch's own clean shutdown (a sentinel per worker, then join); a daemonic child still
    alive after that is killed (daemonic children end with their parent in any case)."""
    for obj in gc.get_objects():
        if type(obj) is _MultiProcessingDataLoaderIter:  # type(): no attribute look-up on arbitrary objects
            obj._shutdown_workers()
    for process in multiprocessing.active_children():
        if process.daemon:
            process.kill()


# registered after multiprocessing's and torch's exit hooks (imported with torch), so it runs before them (atexit
# is LIFO): torch's marks the interpreter as exiting, after which an iterator's shutdown does nothing
atexit.register(stop_loader_workers)


def worker_context() -> multiprocessing.context.BaseContext | None:
    """The loader workers' start method: Python's default, except inside a joblib (loky) worker process (Hydra's
    joblib launcher), whose default context cannot start DataLoader workers ("'Process' object has no attribute
    'env'"); there, fork on platforms that have it."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork", "spawn", "forkserver") or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return multiprocessing.get_context("fork")


class CaptionedImages(Dataset):
    """Items of a cached split as uint8 tensors; training draws one caption per image per visit (or k of them)."""

    def __init__(
        self,
        split: cache.SplitData,
        tokens: np.ndarray,
        train: bool,
        augment: bool = False,
        pad: int = 4,
        captions_per_step: int = 1,
    ) -> None:
        self.split, self.tokens, self.train, self.augment, self.pad = split, tokens, train, augment, pad
        # training items carry k captions (k, T) when k > 1: distinct ones while the image has that many
        self.captions_per_step = captions_per_step
        self.n_caps = np.array([len(c) for c in split.captions])
        # `serve_class_masks`: items also carry "class_mask" (S, S) uint8, the union of these parts' masks,
        # augmented exactly as the image (the oracle Q of model.loss.q_source=oracle)
        self.class_parts: tuple[int, ...] | None = None
        # `serve_part_masks`: training items also carry "part_masks" (P, S, S) uint8, augmented as the image, and
        # "token_part" (T,): the part each caption position's word names, -1 for none (model.loss.part_attention)
        self.token_parts: np.ndarray | None = None  # (N, C, T) int8

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Item `i`; a key `(i, seed)` (from `EpochSampler`) makes its random choices a function of `seed`."""
        i, seed = key if isinstance(key, tuple) else (key, None)
        image = torch.from_numpy(np.array(self.split.images[i])).permute(2, 0, 1)  # (3, S, S) uint8
        mask = self._class_mask(i)  # (1, S, S) uint8 or None
        parts = self._part_masks(i)  # (P, S, S) uint8 or None
        j: int | np.ndarray
        if self.train:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            j = self._draw_captions(int(self.n_caps[i]), gen)
            if self.augment:
                image, (mask, parts) = _augment(image, self.pad, gen, mask, parts)
        else:
            j = 0  # evaluation: caption 0 for the loss; all captions serve as references
        item = {
            "image": image,
            "label": torch.tensor(int(self.split.labels[i])),
            "tokens": torch.from_numpy(self.tokens[i, j]),
            "index": torch.tensor(i),
        }
        if mask is not None:
            item["class_mask"] = mask[0]
        if parts is not None and self.token_parts is not None:
            item["part_masks"] = parts
            item["token_part"] = torch.from_numpy(self.token_parts[i, j].astype(np.int64))
        if not self.train:
            for name in ("masks", "boxes", "parts"):
                arr = getattr(self.split, name)
                if arr is not None:
                    item[name] = torch.from_numpy(np.array(arr[i]))
        return item

    def _draw_captions(self, n: int, gen: torch.Generator | None) -> int | np.ndarray:
        """Which of the image's `n` captions this visit trains on: one index, or `captions_per_step` of them
        (k,) — distinct while n ≥ k, each caption as often as the others otherwise."""
        k = self.captions_per_step
        if k == 1:
            return int(torch.randint(n, (), generator=gen))
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-k // n))])[:k]
        return order.numpy()

    def _class_mask(self, i: int) -> torch.Tensor | None:
        """(1, S, S) uint8: where image `i` shows one of `class_parts` (None unless served)."""
        if self.class_parts is None or self.split.masks is None:
            return None
        parts = np.asarray(self.split.masks[i])[list(self.class_parts)]  # (P', S, S)
        return torch.from_numpy(parts.max(0, initial=0)[None].astype(np.uint8))

    def _part_masks(self, i: int) -> torch.Tensor | None:
        """(P, S, S) uint8: every part's mask of image `i` (None unless `serve_part_masks` ran, training only)."""
        if self.token_parts is None or self.split.masks is None or not self.train:
            return None
        return torch.from_numpy(np.asarray(self.split.masks[i]).astype(np.uint8))


def _augment(
    image: torch.Tensor, pad: int, gen: torch.Generator | None, *masks: torch.Tensor | None
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Random horizontal flip and a random shift of up to `pad` pixels, on uint8 (3, S, S); every mask (C, S, S)
    gets the same flip and shift, None stays None (the random draws do not depend on the masks)."""
    flip = bool(torch.rand((), generator=gen) < 0.5)
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen)) if pad > 0 else (0, 0)

    def move(x: torch.Tensor) -> torch.Tensor:
        x = x.flip(-1) if flip else x
        if pad <= 0:
            return x
        s = x.shape[-1]
        padded = torch.nn.functional.pad(x[None].float(), (pad,) * 4, mode="replicate")[0].to(torch.uint8)
        return padded[:, dy : dy + s, dx : dx + s]

    return move(image), [move(m) if m is not None else None for m in masks]


class JointDataModule(L.LightningDataModule):
    """Serves any `Source` through the decode-once cache, with captions tokenised once per split."""

    def __init__(
        self,
        source: Source,
        cache_root: str,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        vocab_size: int = 1000,
        tokenizer_type: str = "bpe",
        max_caption_len: int = 32,
        captions_per_step: int = 1,
        augment: bool = True,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        prepare_data_per_node: bool = False,
    ) -> None:
        super().__init__()
        # False: only global rank 0 builds the cache (a shared file system); True: local rank 0 of
        # every node does (node-local caches). Either way the other ranks wait, then read.
        self.prepare_data_per_node = prepare_data_per_node
        self.seed = seed  # the training order and per-sample randomness (jointcap.data.sampling)
        self.source = source
        self.cache_root = Path(cache_root).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.vocab_size, self.tokenizer_type, self.max_caption_len = vocab_size, tokenizer_type, max_caption_len
        self.augment, self.captions_per_step = augment, captions_per_step
        self.splits: dict[str, cache.SplitData] = {}
        self.datasets: dict[str, CaptionedImages] = {}
        self.tokenizer: Tokenizer | None = None
        self.info: dict = {}
        self._train_loader: ResumableLoader | None = None
        self._train_loader_state: dict | None = None  # from a checkpoint, for the next train_dataloader()

    @property
    def cache_dir(self) -> Path:
        return self.cache_root / self.source.cache_key()

    @property
    def tokenizer_path(self) -> Path:
        return self.cache_dir / f"tokenizer-{self.tokenizer_type}-{self.vocab_size}.model"

    def prepare_data(self) -> None:
        """Rank 0 only: build the cache and the tokenizer if they are not already complete.

        A file lock serialises concurrent jobs that share the cache (parallel sweeps); whoever
        holds it is the only writer, so temporary leftovers of killed builds can go.
        """
        self.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.cache_dir}.lock"):
            cache.remove_stale_temps(self.cache_dir)
            if not cache.dataset_complete(self.cache_dir):
                log.info("building the %s cache in %s", self.source.name, self.cache_dir)
                self.source.build(self.cache_dir)
            if self.tokenizer_path.is_file() and not _loads(self.tokenizer_path):
                log.warning("%s: a corrupt cached tokenizer; training it again", self.tokenizer_path)
                self.tokenizer_path.unlink()
            if not self.tokenizer_path.is_file():
                train = cache.read_split(self.cache_dir / "train")
                captions = [c for caps in train.captions for c in caps]
                Tokenizer.train(captions, self.vocab_size, self.tokenizer_type).save(self.tokenizer_path)

    def setup(self, stage: str | None = None) -> None:
        """Every rank: open the cached splits (memory-mapped) and tokenise their captions."""
        if self.splits:
            return
        self.info = cache.read_info(self.cache_dir)
        if not self.tokenizer_path.is_file():
            raise cache.CacheError(f"{self.tokenizer_path}: missing tokenizer (prepare_data has not run)")
        try:
            self.tokenizer = Tokenizer.load(self.tokenizer_path)
        except TokenizerError as e:
            raise cache.CacheError(f"{e}; delete it and run again (prepare_data trains it anew)") from None
        for name in cache.SPLITS:
            split = cache.read_split(self.cache_dir / name)
            self.splits[name] = split
            tokens = self._tokenise(split.captions)
            self.datasets[name] = CaptionedImages(
                split, tokens, train=name == "train", augment=self.augment, captions_per_step=self.captions_per_step
            )

    def _tokenise(self, captions: list[list[str]]) -> np.ndarray:
        """(N, C, T) int64 ids; images with fewer captions repeat their last one."""
        n_caps = max((len(c) for c in captions), default=1)
        out = np.zeros((len(captions), n_caps, self.max_caption_len), dtype=np.int64)
        if self.tokenizer is None:
            raise RuntimeError("JointDataModule: the tokenizer is made in setup(); call it before tokenising")
        for i, caps in enumerate(captions):
            for j in range(n_caps):
                out[i, j] = self.tokenizer.encode(caps[min(j, len(caps) - 1)], self.max_caption_len)
        return out

    # -- facts the model needs -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    @property
    def has_part_masks(self) -> bool:
        """Whether every split stores per-image part masks and the data names its class-defining parts."""
        return (
            bool(self.splits)
            and bool(self.info.get("class_parts"))
            and all(split.masks is not None for split in self.splits.values())
        )

    def serve_class_masks(self) -> None:
        """From now on every item also carries "class_mask" (S, S): its class-defining parts (`info["class_parts"]`),
        flipped and shifted with the image in training. Needs `has_part_masks`."""
        if not self.has_part_masks:
            raise ValueError(f"{self.source.name}: no per-image part masks or class-defining parts to serve")
        parts = tuple(int(p) for p in self.info["class_parts"])
        for dataset in self.datasets.values():
            dataset.class_parts = parts

    def serve_part_masks(self) -> None:
        """From now on every training item also carries "part_masks" (P, S, S) and "token_part" (T,): for each
        position of its caption, the part its word names (a part noun, or an attribute word describing the part
        that follows it, as word grounding pairs them), -1 elsewhere. Needs `has_part_masks` and a tokenizer."""
        if not self.has_part_masks or self.tokenizer is None:
            raise ValueError(f"{self.source.name}: no per-image part masks (or no tokenizer) to serve part targets")
        words = (dict(self.info.get("part_words", {})), frozenset(self.info.get("attribute_words", ())))
        train = self.datasets["train"]
        flat = train.tokens.reshape(-1, train.tokens.shape[-1])  # (N·C, T)
        targets = part_words.token_parts(self.tokenizer, flat, *words)
        train.token_parts = targets.reshape(train.tokens.shape).astype(np.int8)

    def references(self, split: str) -> list[list[str]]:
        """All reference captions of `split`, by dataset index."""
        return self.splits[split].captions

    # -- loaders ---------------------------------------------------------------------------
    def _loader_kwargs(self) -> dict:
        workers = self.num_workers
        return {
            "num_workers": workers,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.persistent_workers and workers > 0,
            "worker_init_fn": init_worker if workers > 0 else None,
            "multiprocessing_context": worker_context() if workers > 0 else None,
            # worker seeds come from here, not from the global RNG (which dropout uses)
            "generator": torch.Generator().manual_seed(self.seed),
        }

    def _eval_loader(self, split: str) -> DataLoader:
        """Every image of `split` once, in index order (training has its own resumable loader)."""
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, shuffle=False, **self._loader_kwargs())

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch), this rank's share, resumable mid-epoch (see jointcap.data.sampling)."""
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(self.datasets["train"], num_replicas=replicas, rank=rank, shuffle=True, seed=self.seed)
        loader = ResumableLoader(
            self.datasets["train"], batch_size=self.batch_size, sampler=sampler, drop_last=True, **self._loader_kwargs()
        )
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        return loader

    # -- checkpoint state: where the training loader is in its epoch -----------------------
    # (Lightning also saves a stateful loader's state, but restores it only if the loader is made
    # after the checkpoint is read, which `estimated_stepping_batches` in configure_optimizers
    # prevents; the datamodule's own state is read before either.)
    def state_dict(self) -> dict:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def _loads(path: Path) -> bool:
    """Whether a cached tokenizer file is a usable SentencePiece model."""
    try:
        Tokenizer.load(path)
    except TokenizerError:
        return False
    return True
