"""`make bench`: is the input pipeline, Lightning and evaluation as fast as they should be?

Measured side by side in one process on one machine (A/B repeats interleaved, medians):

1. Lightning: images/s of a real `Trainer.fit` (the real LightningModule, logging as in a run,
   no progress bar, no checkpoints) vs a plain PyTorch loop over the same model, batches
   (already in memory for both) and optimizer.                        target ≥ 0.95
2. Input pipeline: the same fit fed by `JointDataModule` (synthetic cache, configured
   workers) vs fed by batches already in memory.                      target ≥ 0.95
3. Captioning's cost: the joint model's training step vs the classifier alone at the same
   resolution (step-time ratio).                                      target ≤ 1.3 on GPU
4. Beam search: batched over images vs one image at a time.          target ≥ 5×
5. Caption metrics: ours vs pycocoevalcap on the same 6,000 × 10 input (equal values).
                                                                      target ≥ 10×
plus the peak memory of the training runs. `--device auto` picks CUDA when there is one. On the
CPU every arm uses one intra-op thread unless `--threads` says otherwise: on a shared 2-core
machine two OpenMP threads stall each other and one step can take 1× or 10× as long.

`--profile paper` measures the paper's setting instead of the 64-px default: the model and optimizer
of conf/experiment/cub_cam.yaml (composed through Hydra, ImageNet weights off: no download), i.e.
ResNet-50 at stage 4 with output stride 16 (a 14×14 map at 224 px), on synthetic images of
`--image-size` (224) in batches of `--batch-size` (64), bf16, channels_last; it adds
3b. Encoder ceiling: the classifier-only step vs a plain torchvision ResNet training step at the same
   settings (same trunk, dilation, batches, precision, optimizer).   target ≥ 0.9
On the GPU it also reports every training arm's peak GPU memory. Both profiles add (unless `--no-launches`)
7. Launches per training step: CUDA kernels (GPU) or top-level aten ops (CPU) of one joint step vs one
   classifier step, from torch.profiler: the work a GPU waits on Python for.   reported only
Fresh `python -m jointcap.run` processes (unless `--no-jobs`; the run config, `--job-steps` training steps, no
validation, nothing kept), each logging its steps' wall-clock times:
8. Two jobs at once: the aggregate steps/s of a two-job Hydra multirun (joblib launcher, n_jobs=2, `threads=auto`)
   while both run vs one lone run's steps/s.                             target ≥ 0.9
8b. The same with two independent runs (each `threads=auto`, neither told of the other).   target ≥ 0.9
9. Time to the 20th step: a fresh run's train start → end of its 20th step vs 20 × its steady step time
   (the median step after the 20th).                                     target ≤ 1.5

    python -m jointcap.tools.bench [--profile paper] [--steps 8 --repeats 3 …] [--out bench.md] [-- hydra overrides]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.progress import ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset

from jointcap.lit_module import JointCaptionModule
from jointcap.models.encoder import _dilation_flags

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
PAPER_EXPERIMENT = "cub_cam"  # the experiment whose model and optimizer `--profile paper` measures
TO_STEP = 20  # row 9: time to this step of a fresh process
# A fresh run that trains only (rows 8, 9): the run config's model and data, no validation or test, nothing kept.
JOB_OVERRIDES = [
    "debug_run=true",
    "ckpt_path=null",
    "test_after_fit=false",
    "model.loss.scst_epochs=0",
    "++trainer.limit_val_batches=0",
    "++trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
    "callbacks.checkpoint=null",
    "callbacks.step_checkpoint=null",
    "callbacks.preemption=null",
    "callbacks.random_state=null",
    "callbacks.media=null",
    "+callbacks.bench_clock._target_=jointcap.tools.bench.StepLog",
    "+callbacks.bench_clock.path=${hydra:runtime.output_dir}/steps.jsonl",
]
Batch = dict[str, torch.Tensor]


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    """One benchmark: figure A vs figure B, their ratio, and the target it must meet."""

    name: str
    a_label: str
    a: float
    b_label: str
    b: float
    unit: str
    ratio: float
    target: float
    higher_is_better: bool
    applies: bool = True  # False: reported only (e.g. a GPU target measured on the CPU)
    note: str = ""

    @property
    def result(self) -> str:
        if not self.applies:
            return "report"
        ok = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "pass" if ok and math.isfinite(self.ratio) else "miss"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result}


@dataclass
class Timing:
    """Wall and main-process CPU seconds over `images` images."""

    wall_s: float
    cpu_s: float
    images: int
    gap_s: float = 0.0  # Lightning arms: median time between one step's end and the next one's start (fetch + transfer)

    @property
    def per_s(self) -> float:
        return self.images / self.wall_s


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


# -- configuration -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Sizes of every benchmark, the device, the output path, and Hydra overrides."""
    p = argparse.ArgumentParser(prog="python -m jointcap.tools.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--profile",
        choices=("default", "paper"),
        default="default",
        help="default: the run config as composed (64 px); paper: conf/experiment/cub_cam.yaml's model and "
        "optimizer (ResNet-50, output stride 16) on synthetic 224-px images, batch 64, bf16, channels_last",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="training batch size (paper profile: 64; default: the config's)"
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="synthetic image side (paper profile: 224; default: the config's)"
    )
    p.add_argument(
        "--skip-caption-metrics", action="store_true", help="leave out row 5 (it does not depend on the profile)"
    )
    p.add_argument(
        "--launches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="row 7: kernels (GPU) or aten ops (CPU) one joint / classifier training step launches",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads; default 1 on the CPU (steady ratios on a shared machine), "
        "torch's own on CUDA; 0: torch's default (as a run uses)",
    )
    p.add_argument(
        "--jobs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rows 8, 8b, 9: fresh `python -m jointcap.run` processes, alone and two at once",
    )
    p.add_argument(
        "--job-steps", type=int, default=60, help="training steps of each fresh run (rows 8, 9); > 20 + a few"
    )
    p.add_argument("--job-repeats", type=int, default=1, help="lone runs and pairs, interleaved (median)")
    p.add_argument("--steps", type=int, default=8, help="timed training steps per fit")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps at the start of every fit")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every training arm (median)")
    p.add_argument("--beam-images", type=int, default=32, help="images decoded by beam search")
    p.add_argument("--beam-repeats", type=int, default=3)
    p.add_argument("--caption-images", type=int, default=6000)
    p.add_argument("--caption-refs", type=int, default=10)
    p.add_argument(
        "--caption-repeats", type=int, default=1, help="best of N for each side (pycocoevalcap takes ~10 s a run here)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the table to OUT.md and OUT.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, e.g. data.batch_size=32")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1 or args.job_repeats < 1:
        p.error("--steps, --warmup, --repeats and --job-repeats must be ≥ 1")
    if args.job_steps < TO_STEP + 3:
        p.error(f"--job-steps must be ≥ {TO_STEP + 3} (the steady steps come after the {TO_STEP}th)")
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be ≥ 1")
    if args.image_size is not None and args.image_size < 16:
        p.error("--image-size must be ≥ 16 (the synthetic renderer's minimum)")
    return args


def profile_overrides(args: argparse.Namespace, device: str) -> list[str]:
    """Hydra overrides that make the profile's config; the command line's own come after them and win."""
    size = args.image_size or (224 if args.profile == "paper" else None)
    batch = args.batch_size or (64 if args.profile == "paper" else None)
    out = []
    if args.profile == "paper":
        # The experiment's model and optimizer as Hydra composes them; its data and trainer are replaced: synthetic
        # images (no download), the trainer of this device (bf16 either way), no ImageNet weights (no download).
        out += [f"+experiment={PAPER_EXPERIMENT}", "data=synthetic", "model.encoder.weights=null"]
        if not any(o.startswith("trainer=") for o in args.overrides):
            out.append("trainer=gpu" if device == "cuda" else "trainer=cpu")
        # Just the images the fits use (the cache is built once per size): drop_last batches, a token val/test split.
        n = (args.warmup + args.steps) * batch
        out += [f"data.source.n_train={n}", f"data.source.n_val={batch}", f"data.source.n_test={batch}"]
    if size is not None:
        out.append(f"data.source.image_size={size}")
    if batch is not None:
        out.append(f"data.batch_size={batch}")
    return out


def resolve_device(name: str) -> str:
    """auto → cuda when available, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    return name


def compose_config(overrides: Sequence[str], device: str, root: Path, task: str | None = None) -> DictConfig:
    """The run's config (conf/), as `python -m jointcap.run` composes it, with `root` as the run folder."""
    # the cross-entropy step is what the rows time (self-critical steps need the run's data module and
    # sample captions: a different step, not benchmarked here)
    extra = ["model.loss.scst_epochs=0"]
    if device == "cuda" and not any(o.startswith("trainer=") for o in overrides):
        extra.append("trainer=gpu")
    if task is not None:
        extra.append(f"model.task={task}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*extra, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root)  # what ${hydra:runtime.output_dir} names
    HydraConfig.instance().set_config(cfg)
    return cfg


def trainer_kwargs(cfg: DictConfig, device: str) -> dict[str, Any]:
    """The run's Trainer settings, minus what a benchmark must not do (progress bar, checkpoints, validation)."""
    HydraConfig.instance().set_config(cfg)
    kw = cast(dict[str, Any], OmegaConf.to_container(cfg.trainer, resolve=True))
    for key in ("_target_", "plugins", "max_epochs", "enable_progress_bar"):
        kw.pop(key, None)
    kw.update(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        max_epochs=-1,
    )
    return kw


def run_loggers(cfg: DictConfig) -> tuple[list[Any], list[L.Callback]]:
    """The run's loggers and callbacks, less every checkpointing, progress-bar and model-summary one (the bench's
    Trainer turns those off, and Lightning refuses such a callback then); a factory may return None."""
    HydraConfig.instance().set_config(cfg)  # each arm's own config resolves ${hydra:…}
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    made = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    off = (ProgressBar, ModelSummary)
    kept = [c for c in made if c is not None and not isinstance(c, off)]
    return loggers, [c for c in kept if "Checkpoint" not in type(c).__name__]


# -- training arms ---------------------------------------------------------------------------
class _InMemory(Dataset):
    """Pre-made batches served as they are (a shallow copy, so hooks never mutate the originals)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return dict(self.batches[i])


class _StepClock(L.Callback):
    """Times the steps after `warmup` (start of batch `warmup` → end of the epoch), and the gaps between steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.c0, self.wall, self.cpu, self.last = warmup, 0.0, 0.0, 0.0, 0.0, -1
        self.ended: float | None = None
        self.gaps: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if batch_idx == self.warmup:
            _sync(pl_module.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif batch_idx > self.warmup and self.ended is not None:
            self.gaps.append(now - self.ended)
        self.last = batch_idx

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.ended = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module.device)
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def lightning_arm(
    module: JointCaptionModule,
    cfg: DictConfig,
    device: str,
    warmup: int,
    steps: int,
    batch_size: int,
    data: list[Batch] | L.LightningDataModule,
) -> Callable[[], Timing]:
    """A fresh `Trainer.fit` of `module` per call, over in-memory batches or a data module."""

    def run() -> Timing:
        clock = _StepClock(warmup)
        loggers, callbacks = run_loggers(cfg)
        trainer = L.Trainer(
            **trainer_kwargs(cfg, device),
            max_steps=warmup + steps,
            logger=loggers or False,
            callbacks=[*callbacks, clock],
        )
        if isinstance(data, list):
            trainer.fit(module, train_dataloaders=DataLoader(_InMemory(data), batch_size=None, shuffle=False))
        else:
            trainer.fit(module, datamodule=data)
        measured = clock.last - warmup + 1
        if measured != steps:
            raise RuntimeError(f"timed {measured} steps, expected {steps} (is the data shorter than warmup + steps?)")
        return Timing(clock.wall, clock.cpu, steps * batch_size, statistics.median(clock.gaps) if clock.gaps else 0.0)

    return run


def plain_arm(
    module: JointCaptionModule, cfg: DictConfig, device: str, warmup: int, steps: int, batches: list[Batch]
) -> Callable[[], Timing]:
    """The same model, losses, optimizer, schedule, precision and clipping in a hand-written loop."""
    dev = torch.device(device)
    step, prepare = _plain_step(module, cfg, dev)

    def run() -> Timing:
        t0 = c0 = 0.0
        for i, batch in enumerate(batches[: warmup + steps]):
            batch = prepare(batch)
            if i == warmup:
                _sync(dev)
                t0, c0 = time.perf_counter(), time.process_time()
            step(batch)
        _sync(dev)
        return Timing(time.perf_counter() - t0, time.process_time() - c0, steps * int(batches[0]["label"].shape[0]))

    return run


def _plain_step(
    module: JointCaptionModule, cfg: DictConfig, dev: torch.device
) -> tuple[Callable[[Batch], None], Callable[[Batch], Batch]]:
    """One hand-written training step of `module` (its losses, optimizer, schedule, precision, clipping) and the
    host → device batch preparation it expects."""
    module = module.to(dev).train()
    opt, sched = _optimizer(module, total_steps=10_000)
    precision = str(cfg.trainer.get("precision", "32"))
    if precision not in ("32", "32-true", "bf16-mixed"):
        raise ValueError(f"the plain loop mirrors precision 32 or bf16-mixed, not {precision}")
    clip = cfg.trainer.get("gradient_clip_val")
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision.startswith("bf16") else nullcontext

    def step(batch: Batch) -> None:
        with autocast():
            terms, _ = module._losses(batch)
            loss = module._total(terms)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), float(clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    def prepare(batch: Batch) -> Batch:
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        return module.on_after_batch_transfer(batch, 0)  # uint8 → normalised float on the device

    return step, prepare


def launches_per_step(module: JointCaptionModule, cfg: DictConfig, device: str, batch: Batch) -> int:
    """What one training step asks of the device: CUDA kernels launched (on the GPU) or dispatched top-level aten ops
    (on the CPU; each costs Python + dispatcher time a GPU would wait on). Runs on a copy, after one warm-up step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    step, prepare = _plain_step(copy.deepcopy(module), cfg, dev)
    step(prepare(batch))  # warm-up: lazy init, cuDNN autotuning, optimizer state
    _sync(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step(prepare(batch))
        _sync(dev)
    events = prof.events()
    if dev.type == "cuda":
        return sum(1 for e in events if e.device_type == DeviceType.CUDA)

    def nested(e: Any) -> bool:
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("aten::"):
                return True
            p = p.cpu_parent
        return False

    return sum(1 for e in events if e.name.startswith("aten::") and not nested(e))


def _optimizer(module: JointCaptionModule, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The module's AdamW parameter groups and warm-up + cosine schedule, built without a Trainer."""
    c = module.optim_cfg
    enc = list(module.net.encoder.parameters())
    enc_ids = {id(p) for p in enc}
    rest = [p for p in module.net.parameters() if id(p) not in enc_ids]
    opt = torch.optim.AdamW(
        [{"params": enc, "lr": c.lr * c.encoder_lr_mult}, {"params": rest, "lr": c.lr}],
        lr=c.lr,
        weight_decay=c.weight_decay,
    )
    warm = min(int(c.warmup_steps), total_steps // 2)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def torchvision_arm(
    cfg: DictConfig,
    device: str,
    warmup: int,
    steps: int,
    batches: list[Batch],
    num_classes: int,
    prepare: Callable[[Batch, int], Batch],
) -> Callable[[], Timing]:
    """A plain torchvision ResNet classifier training step at the config's settings: the ceiling for our encoder.

    The same trunk (name, output stride by dilation, channels_last), batches, normalisation (`prepare`), precision,
    clipping and AdamW groups (trunk at lr × encoder_lr_mult), in a hand-written loop; its own global-pool + fc head.
    """
    import torchvision

    dev = torch.device(device)
    enc, c = cfg.model.encoder, cfg.model.optim
    flags = _dilation_flags(4, int(enc.output_stride))
    net = getattr(torchvision.models, str(enc.name))(
        weights=None, num_classes=num_classes, replace_stride_with_dilation=flags
    )
    net = net.to(dev).train()
    if cfg.model.channels_last:
        net = net.to(memory_format=torch.channels_last)
    head = list(net.fc.parameters())
    head_ids = {id(p) for p in head}
    trunk = [p for p in net.parameters() if id(p) not in head_ids]
    opt = torch.optim.AdamW(
        [{"params": trunk, "lr": c.lr * c.encoder_lr_mult}, {"params": head, "lr": c.lr}],
        lr=c.lr,
        weight_decay=c.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    bf16 = str(cfg.trainer.get("precision", "32")).startswith("bf16")
    clip = cfg.trainer.get("gradient_clip_val")

    def step(batch: Batch) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = torch.nn.functional.cross_entropy(net(batch["image"]).float(), batch["label"])
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    def run() -> Timing:
        t0 = c0 = 0.0
        for i, batch in enumerate(batches[: warmup + steps]):
            batch = prepare({k: batch[k].to(dev, non_blocking=True) for k in ("image", "label")}, 0)
            if i == warmup:
                _sync(dev)
                t0, c0 = time.perf_counter(), time.process_time()
            step(batch)
        _sync(dev)
        return Timing(time.perf_counter() - t0, time.process_time() - c0, steps * int(batches[0]["label"].shape[0]))

    return run


def interleave(
    arms: dict[str, Callable[[], Timing]], repeats: int, peaks: dict[str, float] | None = None
) -> dict[str, list[Timing]]:
    """Run every arm `repeats` times, round-robin with a rotating order, so drift hits all alike.

    With `peaks` (CUDA only), each arm's peak allocated GPU memory (MiB, max over its runs) is written there.
    """
    names = list(arms)
    out: dict[str, list[Timing]] = {n: [] for n in arms}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if peaks is not None:
                torch.cuda.reset_peak_memory_stats()
            out[name].append(arms[name]())
            if peaks is not None:
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)
            t = out[name][-1]
            print(
                f"[bench] {name} #{r + 1}: {t.wall_s:.3f} s wall, {t.cpu_s:.3f} s CPU, {t.per_s:.1f}/s",
                file=sys.stderr,
                flush=True,
            )
    return out


def median_rate(timings: list[Timing]) -> float:
    """Median images/s."""
    return statistics.median(t.per_s for t in timings)


def median_cpu_per_image(timings: list[Timing]) -> float:
    """Median main-process CPU seconds per image."""
    return statistics.median(t.cpu_s / t.images for t in timings)


# -- the benchmarks ----------------------------------------------------------------------------
def bench_training(args: argparse.Namespace, device: str, report: Report) -> tuple[JointCaptionModule, torch.Tensor]:
    """Rows 1–3 (Lightning overhead, input pipeline, captioning's cost), peak memory; returns the module and images."""
    root = Path(tempfile.mkdtemp(prefix="jointcap-bench-"))
    overrides = [*profile_overrides(args, device), *args.overrides]
    cfg = compose_config(overrides, device, root / "joint")
    cls_cfg = compose_config(overrides, device, root / "classifier", task="classifier")
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    n = args.warmup + args.steps
    batches = _first_batches(dm, n)
    bs = int(batches[0]["label"].shape[0])
    torch.manual_seed(0)  # the same initial weights every run (no global seeding side effects)
    facts = {"num_classes": dm.num_classes, "vocab_size": dm.tokenizer.vocab_size}
    joint = instantiate(cfg.model, _convert_="all", **facts)
    plain = copy.deepcopy(joint)  # the same initial weights
    piped = copy.deepcopy(joint)
    classifier = instantiate(cls_cfg.model, _convert_="all", **facts)
    counted = {
        "joint": copy.deepcopy(joint),
        "classifier": copy.deepcopy(classifier),
    }  # row 7's: never fit by a Trainer
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mb()
    arms = {
        "lightning": lightning_arm(joint, cfg, device, args.warmup, args.steps, bs, batches),
        "plain": plain_arm(plain, cfg, device, args.warmup, args.steps, batches),
        "pipeline": lightning_arm(piped, cfg, device, args.warmup, args.steps, bs, dm),
        "classifier": lightning_arm(classifier, cls_cfg, device, args.warmup, args.steps, bs, batches),
    }
    enc = cfg.model.encoder
    if args.profile == "paper" and int(enc.stage) == 4 and enc.name not in ("resnet18", "resnet34"):
        # the whole torchvision net is our trunk + a head; BasicBlock nets cannot dilate to reach output stride 16
        arms["torchvision"] = torchvision_arm(
            cls_cfg, device, args.warmup, args.steps, batches, dm.num_classes, classifier.on_after_batch_transfer
        )
    peaks: dict[str, float] = {}
    t = interleave(arms, args.repeats, peaks if device == "cuda" else None)
    report.memory = {"rss_peak_mb": _rss_mb(), "rss_peak_before_training_mb": rss_before}
    if device == "cuda":
        report.memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        report.memory.update({f"cuda_peak_{k}_mb": v for k, v in peaks.items()})
    rate = {k: median_rate(v) for k, v in t.items()}
    cpu = {k: median_cpu_per_image(v) for k, v in t.items()}
    gap = lambda k: 1e3 * statistics.median(x.gap_s for x in t[k])  # noqa: E731
    spread = lambda k: f"{min(x.per_s for x in t[k]):.1f}–{max(x.per_s for x in t[k]):.1f}"  # noqa: E731
    report.rows.append(
        Row(
            "1. Lightning fit vs plain loop",
            "Lightning img/s",
            rate["lightning"],
            "plain img/s",
            rate["plain"],
            "img/s",
            rate["lightning"] / rate["plain"],
            0.95,
            True,
            note=f"CPU-time ratio {cpu['plain'] / cpu['lightning']:.3f}; "
            f"ranges {spread('lightning')} / {spread('plain')}",
        )
    )
    workers = int(cfg.data.num_workers)
    report.rows.append(
        Row(
            "2. data pipeline vs in-memory",
            f"DataModule ({workers} workers) img/s",
            rate["pipeline"],
            "in-memory img/s",
            rate["lightning"],
            "img/s",
            rate["pipeline"] / rate["lightning"],
            0.95,
            True,
            note=f"ranges {spread('pipeline')} / {spread('lightning')}; between steps (fetch, transfer, hooks) "
            f"{gap('pipeline'):.1f} / {gap('lightning'):.1f} ms",
        )
    )
    report.rows.append(
        Row(
            "3. joint step vs classifier step",
            "joint img/s",
            rate["lightning"],
            "classifier img/s",
            rate["classifier"],
            "img/s",
            rate["classifier"] / rate["lightning"],
            1.3,
            False,
            applies=device == "cuda",
            note=f"step-time ratio; CPU-time ratio {cpu['lightning'] / cpu['classifier']:.2f}"
            + ("" if device == "cuda" else "; target is for GPUs"),
        )
    )
    if "torchvision" in t:
        report.rows.append(
            Row(
                "3b. classifier step vs plain torchvision ResNet",
                "classifier img/s",
                rate["classifier"],
                "torchvision img/s",
                rate["torchvision"],
                "img/s",
                rate["classifier"] / rate["torchvision"],
                0.9,
                True,
                note=f"{enc.name}, output stride {enc.output_stride}, same batches and precision; "
                f"Lightning fit vs a plain loop; ranges {spread('classifier')} / "
                f"{spread('torchvision')}",
            )
        )
    if args.launches:
        kind = "CUDA kernels" if device == "cuda" else "top-level aten ops"
        n_joint, n_cls = (
            launches_per_step(counted[k], c, device, batches[0]) for k, c in (("joint", cfg), ("classifier", cls_cfg))
        )
        report.rows.append(
            Row(
                "7. launches per training step: joint vs classifier",
                f"joint {kind}",
                n_joint,
                f"classifier {kind}",
                n_cls,
                "count",
                n_joint / max(n_cls, 1),
                math.nan,
                False,
                applies=False,
                note="one plain-loop step after a warm-up (torch.profiler); what the captioner's time "
                "loop adds, and what CUDA graphs would replay in one launch",
            )
        )
    report.settings.update(
        profile=args.profile,
        batch_size=bs,
        image_size=int(batches[0]["image"].shape[-1]),
        precision=str(cfg.trainer.precision),
        channels_last=bool(cfg.model.channels_last),
        num_workers=workers,
        model=OmegaConf.to_container(cfg.model.encoder),
        optim=OmegaConf.to_container(cfg.model.optim),
    )
    return joint.to(device), torch.cat([b["image"] for b in batches])  # (N, 3, S, S) uint8


def _first_batches(dm: L.LightningDataModule, n: int) -> list[Batch]:
    """The first `n` training batches of the real pipeline, held in memory."""
    loader = dm.train_dataloader()
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    raise ValueError(f"the training split gives {len(out)} batches; warmup + steps = {n} are needed")


def _rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (2**20 if sys.platform == "darwin" else 2**10)


def bench_beam(
    module: JointCaptionModule,
    images: torch.Tensor,
    args: argparse.Namespace,
    device: str,
    precision: str,
    report: Report,
) -> None:
    """Row 4: beam search batched over images vs one image at a time, on the same embeddings."""
    dev = torch.device(device)
    module.eval()
    images = images[: args.beam_images]
    c = module.decode_cfg
    beam, max_len, lp = c.test_beam_size, c.max_len, c.length_penalty
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if precision.startswith("bf16") else nullcontext()
    with torch.no_grad(), autocast:
        x = module.on_after_batch_transfer({"image": images.to(dev)}, 0)["image"]
        emb = module.net.embed(x)  # (N, D, h, w)

        def batched() -> None:
            module.net.generate(emb, beam, max_len, lp)

        def one_by_one() -> None:
            for i in range(emb.shape[0]):
                module.net.generate(emb[i : i + 1], beam, max_len, lp)

        batched()  # warm-up
        one_by_one()
        times = interleave({"batched": _timer(batched, dev), "single": _timer(one_by_one, dev)}, args.beam_repeats)
    n = emb.shape[0]
    b, s = (statistics.median(x.wall_s for x in times[k]) for k in ("batched", "single"))
    report.rows.append(
        Row(
            "4. beam search batched vs per image",
            "batched img/s",
            n / b,
            "one-by-one img/s",
            n / s,
            "img/s",
            s / b,
            5.0,
            True,
            note=f"beam {beam}, max_len {max_len}, {n} images",
        )
    )


def _timer(fn: Callable[[], None], dev: torch.device) -> Callable[[], Timing]:
    """`fn` as a timed arm."""

    def run() -> Timing:
        _sync(dev)
        w, c = time.perf_counter(), time.process_time()
        fn()
        _sync(dev)
        return Timing(time.perf_counter() - w, time.process_time() - c, 1)

    return run


def bench_captions(args: argparse.Namespace, report: Report) -> None:
    """Row 5: our caption metrics vs pycocoevalcap's on one input (values must agree)."""
    from jointcap.metrics.bench_captions import benchmark_caption_metrics

    benchmark_caption_metrics(
        n_images=min(200, args.caption_images), n_refs=args.caption_refs
    )  # warm-up (imports, first calls)
    r = benchmark_caption_metrics(n_images=args.caption_images, n_refs=args.caption_refs, repeats=args.caption_repeats)
    report.rows.append(
        Row(
            "5. caption metrics vs pycocoevalcap",
            "ours s",
            r["ours_s"],
            "pycocoevalcap s",
            r["pycocoevalcap_s"],
            "s",
            r["speedup"] if r["equal"] else float("nan"),
            10.0,
            True,
            note=f"{r['n_images']}×{r['n_refs']} captions; equal values: {r['equal']} "
            f"(max |Δ| {r['max_abs_diff']:.1e}); CPU-time speedup {r['speedup_cpu']:.1f}×",
        )
    )


# -- fresh processes: two jobs at once, time to the 20th step (rows 8, 8b, 9) ----------------------
class StepLog(L.Callback):
    """Appends the wall-clock time (time.time()) of the train start and of every training step's end to `path`,
    one JSON line each: how the bench times fresh `python -m jointcap.run` processes from outside."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, event: str, **fields: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write("train_start", threads=torch.get_num_threads())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._write("step", step=trainer.global_step)


@dataclass
class JobLog:
    """One fresh run's timeline (seconds since its launch): train start and every step's end."""

    launched: float
    train_start: float
    steps: list[float]
    threads: int

    @classmethod
    def read(cls, path: Path, launched: float) -> JobLog:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        start = next(x for x in lines if x["event"] == "train_start")
        ends = [x["t"] - launched for x in lines if x["event"] == "step"]
        if len(ends) < TO_STEP + 2:
            raise RuntimeError(f"{path}: {len(ends)} training steps logged, at least {TO_STEP + 2} needed")
        return cls(launched, start["t"] - launched, ends, int(start["threads"]))

    def steady_step_s(self, after: int = TO_STEP) -> float:
        """Median time of the steps after the `after`th."""
        return statistics.median(b - a for a, b in zip(self.steps[after - 1 :], self.steps[after:], strict=False))

    def to_step_s(self, n: int = TO_STEP) -> float:
        """Train start → end of the `n`th step."""
        return self.steps[n - 1] - self.train_start


def _job_env() -> dict[str, str]:
    """The bench's environment for its runs, with this checkout first on PYTHONPATH (tests run from worktrees)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root, "WANDB_MODE": "disabled"}


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jointcap.run", *args], env=_job_env(), stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def _wait(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    """Wait for every run; a failed one raises with the end of its output."""
    for proc, log in zip(procs, logs, strict=True):
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"a bench run took over {timeout:.0f} s; its output: {log}") from None
        if code != 0:
            raise RuntimeError(f"a bench run failed ({code}):\n{log.read_text()[-3000:]}")


def _steps(n: int) -> list[str]:
    """Overrides (after the user's) that make a run train exactly `n` steps."""
    return ["trainer.max_epochs=-1", f"++trainer.max_steps={n}"]


def lone_run(overrides: list[str], steps: int, folder: Path, timeout: float) -> JobLog:
    """One fresh `python -m jointcap.run` of `steps` training steps, alone."""
    folder.mkdir(parents=True)
    t0 = time.time()
    proc = _launch([*JOB_OVERRIDES, *overrides, *_steps(steps), f"hydra.run.dir={folder}"], folder / "out")
    _wait([proc], [folder / "out"], timeout)
    return JobLog.read(folder / "steps.jsonl", t0)


def pair_run(overrides: list[str], steps: int, folder: Path, timeout: float, launcher: bool) -> list[JobLog]:
    """Two fresh runs at once: one Hydra multirun through the joblib launcher (n_jobs=2, so `threads=auto` is a
    half share each), or two independent `python -m jointcap.run` processes that do not know of each other."""
    folder.mkdir(parents=True)
    common = [*JOB_OVERRIDES, *overrides, *_steps(steps)]
    t0 = time.time()
    if launcher:
        sweep = ["-m", "seed=0,1", "hydra/launcher=local", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder}"]
        _wait([_launch([*sweep, *common], folder / "out")], [folder / "out"], timeout)
        found = sorted(folder.glob("*/steps.jsonl"))
        if len(found) != 2:
            raise RuntimeError(f"the two-job multirun left {len(found)} step logs in {folder}")
        return [JobLog.read(p, t0) for p in found]
    dirs = [folder / f"job{i}" for i in (0, 1)]
    procs = [_launch([*common, f"seed={i}", f"hydra.run.dir={d}"], folder / f"out{i}") for i, d in enumerate(dirs)]
    _wait(procs, [folder / "out0", folder / "out1"], timeout)
    return [JobLog.read(d / "steps.jsonl", t0) for d in dirs]


def aggregate_rate(jobs: list[JobLog], after: int = TO_STEP) -> float:
    """Steps/s of all `jobs` together while all of them were past their `after`th step and still running."""
    start = max(j.steps[after - 1] for j in jobs)
    end = min(j.steps[-1] for j in jobs)
    if end <= start:
        raise RuntimeError("the runs did not overlap in their steady steps; give them more --job-steps")
    done = sum(sum(1 for t in j.steps if start < t <= end) for j in jobs)
    return done / (end - start)


def bench_jobs(args: argparse.Namespace, device: str, report: Report) -> None:
    """Rows 8, 8b, 9: fresh runs alone and two at once (interleaved `--job-repeats` times)."""
    root = Path(tempfile.mkdtemp(prefix="jointcap-bench-jobs-"))
    overrides = [*profile_overrides(args, device), *args.overrides]
    if device == "cuda" and not any(o.startswith("trainer=") for o in overrides):
        overrides.insert(0, "trainer=gpu")
    timeout = 600.0 + 30.0 * args.job_steps
    lone: list[JobLog] = []
    rates: dict[str, list[float]] = {"launcher": [], "independent": []}
    threads: dict[str, list[int]] = {"launcher": [], "independent": []}
    for r in range(args.job_repeats):
        lone.append(lone_run(overrides, args.job_steps, root / f"lone{r}", timeout))
        for kind in ("launcher", "independent"):
            pair = pair_run(overrides, args.job_steps, root / f"{kind}{r}", timeout, launcher=kind == "launcher")
            rates[kind].append(aggregate_rate(pair))
            threads[kind] = [j.threads for j in pair]
        log = lone[-1]
        print(
            f"[bench] jobs #{r + 1}: lone {1 / log.steady_step_s():.2f} steps/s ({log.threads} threads), "
            f"launcher pair {rates['launcher'][-1]:.2f}, independent pair {rates['independent'][-1]:.2f} steps/s; "
            f"to step {TO_STEP} {log.to_step_s():.1f} s",
            file=sys.stderr,
            flush=True,
        )
    alone = statistics.median(1 / j.steady_step_s() for j in lone)
    for kind, name in (
        ("launcher", "8. two jobs at once (joblib launcher)"),
        ("independent", "8b. two independent runs at once"),
    ):
        pair_rate = statistics.median(rates[kind])
        report.rows.append(
            Row(
                name,
                "two runs' steps/s together",
                pair_rate,
                "one run alone steps/s",
                alone,
                "steps/s",
                pair_rate / alone,
                0.9,
                True,
                note=f"threads={'/'.join(map(str, threads[kind]))} in the pair, {lone[-1].threads} alone; "
                f"steady steps (after the {TO_STEP}th) while both ran; {args.job_steps} steps a run",
            )
        )
    to_step = statistics.median(j.to_step_s() for j in lone)
    steady = statistics.median(j.steady_step_s() for j in lone)
    startup = statistics.median(j.train_start for j in lone)
    first = statistics.median(j.steps[0] - j.train_start for j in lone)
    report.rows.append(
        Row(
            f"9. time to the {TO_STEP}th step vs {TO_STEP} × steady step",
            f"train start → step {TO_STEP} s",
            to_step,
            f"{TO_STEP} × steady step s",
            TO_STEP * steady,
            "s",
            to_step / (TO_STEP * steady),
            1.5,
            False,
            note=f"a fresh run alone; its first step {first:.2f} s, steady {steady:.3f} s; launch → train start "
            f"{startup:.1f} s (imports, config, data, model), not in the ratio",
        )
    )
    report.settings["job_steps"] = args.job_steps


# -- output ------------------------------------------------------------------------------------
def _row_key(row: Row) -> tuple[int, str]:
    """Table order: by the row's number, then its letter (3 < 3b < 4)."""
    num = row.name.split(".")[0]
    digits = "".join(ch for ch in num if ch.isdigit())
    return int(digits or 0), num


def _target(row: Row) -> str:
    """The target cell: '≥ 0.95', or '—' for a row that has none."""
    return f"{'≥' if row.higher_is_better else '≤'} {row.target:g}" if math.isfinite(row.target) else "—"


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def markdown(report: Report) -> str:
    """The table, the memory figures and the machine, as Markdown."""
    head = "| benchmark | A | B | ratio A/B | target | result | notes |\n|---|---|---|---|---|---|---|\n"
    lines = [
        f"| {r.name} | {r.a_label}: {_fmt(r.a)} | {r.b_label}: {_fmt(r.b)} | {_fmt(r.ratio)} | "
        f"{_target(r)} | {r.result} | {r.note} |"
        for r in report.rows
    ]
    mem = ", ".join(f"{k} {v:.0f}" for k, v in report.memory.items())
    machine = ", ".join(f"{k}: {v}" for k, v in report.machine.items())
    st = report.settings
    model = st.get("model") or {}
    setting = (
        f"Profile: {st.get('profile', 'default')} ({model.get('name')}, stage {model.get('stage')}, "
        f"output stride {model.get('output_stride')}, {st.get('image_size')} px, batch {st.get('batch_size')}, "
        f"{st.get('precision')}, channels_last {st.get('channels_last')}, {st.get('num_workers')} workers).\n"
        if model
        else ""
    )
    return (
        head + "\n".join(lines) + f"\n\n{setting}Peak memory of the training runs (MiB): {mem}.\nMachine: {machine}.\n"
    )


def machine_facts(device: str) -> dict[str, Any]:
    """What the figures were measured on."""
    import os
    import platform

    facts: dict[str, Any] = {
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    if hasattr(os, "getloadavg"):
        facts["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    return facts


def write(report: Report, out: Path) -> None:
    """OUT.md (the table) and OUT.json (every figure)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(report))
    data = {
        "rows": [r.as_dict() for r in report.rows],
        "memory": report.memory,
        "machine": report.machine,
        "settings": report.settings,
    }
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))


@contextmanager
def _quiet() -> Iterator[None]:
    """Benchmarks print one table: silence Lightning's start-up chatter and its warnings (restored afterwards)."""
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric", "jointcap")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=False):
                lg.setLevel(level)


def main(argv: Sequence[str] | None = None) -> Report:
    """Run every benchmark, print the table, write it where `--out` says."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    threads = torch.get_num_threads()
    wanted = args.threads if args.threads is not None else (1 if device == "cpu" else 0)
    if wanted > 0:
        torch.set_num_threads(wanted)
    report = Report(machine=machine_facts(device), settings={"args": {k: str(v) for k, v in vars(args).items()}})
    t0 = time.perf_counter()
    with _quiet():
        try:
            module, images = bench_training(args, device, report)
            bench_beam(module, images, args, device, report.settings["precision"], report)
            if not args.skip_caption_metrics:
                bench_captions(args, report)
            if args.jobs:
                bench_jobs(args, device, report)
        finally:
            HydraConfig.instance().cfg = None  # set while the arms ran; leave none behind
            torch.set_num_threads(threads)
    report.rows.sort(key=_row_key)
    report.machine["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(report))
    load = report.machine.get("load_avg_1m_at_start", 0.0)
    if device == "cpu" and load > (report.machine.get("cpu_count") or 1):
        print(
            f"note: the machine was busy (load {load} on {report.machine['cpu_count']} CPUs): timings are noisy "
            "(several intra-op threads suffer most)",
            file=sys.stderr,
        )
    if args.out is not None:
        write(report, args.out)
    return report


if __name__ == "__main__":
    main()
