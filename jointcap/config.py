"""The configuration's schema, checked at the start of `jointcap.run` before any data work.

Typed dataclasses mirror `conf/model/*.yaml` (the arguments of `JointCaptionModule`) and
`conf/data/datamodule.yaml` (those of `JointDataModule`); field metadata carries the allowed
values and ranges. `validate(cfg)` reports every problem at once, each naming its key and
what is allowed:
* a key the schema does not know, unless the section's `_target_` accepts it as an argument
  (so a new constructor argument works before the schema learns its type);
* a value of the wrong type (OmegaConf's conversion rules), outside its range, or not one of
  its choices; NaN and ±inf are refused in every float field;
* `data.source` is checked against the schema of its `_target_` (CUB, Flowers, synthetic) and
  `trainer` against `TrainerConfig`; a key without a schema field is checked against the type
  annotation of its `_target_`'s argument (bool, int, float, str, Literal, Optional/Union);
* for `data.source`, `trainer`, `callbacks.*` and `logger.*`: a key their `_target_` does not
  take; at the top level: a key neither this schema nor `conf/config.yaml` declares;
* a batch size larger than a (known) training split, which would train on nothing.
Every numeric field declares its range (`unbounded()` where any finite value is fine): the fuzz
test in tests/test_config_fuzz.py tries wrong types, out-of-range values, NaN/inf and unknown keys
on every field and fails for a field that lets one through.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, cast

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jointcap.data import cub, download, flowers
from jointcap.losses import ATTENTION_WORDS, DIVERGENCES, GRAD_TO, Q_SOURCES
from jointcap.models.encoder import _RESNETS as ENCODERS
from jointcap.models.joint import TASKS

PRIMARY_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "config.yaml"
TOKENIZER_TYPES = ("unigram", "bpe", "char", "word")  # SentencePiece model types
SCHEDULERS = ("cosine", "none")


class ConfigError(ValueError):
    """The composed configuration is invalid; the message lists every problem."""


def choice(default: Any, options: tuple) -> Any:
    """A field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": tuple(options)})


def at_least(default: Any, low: float) -> Any:
    """A field whose value must be ≥ `low`."""
    return field(default=default, metadata={"min": low})


def above(default: Any, low: float) -> Any:
    """A field whose value must be > `low`."""
    return field(default=default, metadata={"above": low})


def fraction(default: float) -> Any:
    """A field whose value must lie in [0, 1)."""
    return field(default=default, metadata={"min": 0.0, "below": 1.0})


def between(default: Any, low: float, high: float) -> Any:
    """A field whose value must lie in [low, high]."""
    return field(default=default, metadata={"min": low, "max": high})


def unbounded(default: Any) -> Any:
    """A numeric field where any finite value is fine (declared, so the fuzz test knows it is on purpose)."""
    return field(default=default, metadata={"unbounded": True})


def auto_or_at_least(low: int) -> Any:
    """A field that is `auto` (the default) or an integer ≥ `low`."""
    return field(default="auto", metadata={"min": low, "also": ("auto",), "type": int})


def each_of(default: list, options: tuple) -> Any:
    """A list field whose every item must be one of `options`."""
    return field(default_factory=lambda: list(default), metadata={"each": tuple(options)})


# -- model (conf/model/*.yaml → jointcap.lit_module.JointCaptionModule) -----------------------
@dataclass
class EncoderConfig:
    name: str = choice("resnet18", ENCODERS)
    weights: str | None = None  # e.g. IMAGENET1K_V1 (needs a download or a torch hub cache)
    stage: int = choice(2, (1, 2, 3, 4))  # keep layers up to layer<stage> (2: stride 8, cheap; the paper's: 4)
    output_stride: int = choice(8, (4, 8, 16, 32))  # 8: 8×8 maps at 64 px; the paper's setting: 16 at 224 px
    input_scale: float = above(1.0, 0)  # images are resized by this factor before the trunk


@dataclass
class EmbeddingConfig:
    dim: int = at_least(256, 1)
    dropout: float = fraction(0.0)
    skip_dim: int = at_least(0, 0)  # captioner-only channels from the encoder beside the shared ones (0 = none)
    skip_from: str = choice("stem", ("stem", "output"))  # the skip's source: the ResNet stem (colour) or the output


@dataclass
class ClassifierConfig:
    dropout: float = fraction(0.2)


@dataclass
class CaptionerConfig:
    embed_dim: int = at_least(128, 1)
    hidden_dim: int = at_least(256, 1)
    attn_dim: int = at_least(128, 1)
    dropout: float = fraction(0.3)
    coverage: bool = False  # the attention sees where it has already looked (the sum of past steps' attention)
    attend_with_word: bool = False  # the attention's query also sees the word just emitted (as top-down attention)
    deep_output: bool = False  # the word logits also read the attended context and the input word (Xu et al. eq. 7)
    input_norm: bool = False  # the map the captioner reads, standardised per channel (BatchNorm) before it attends


@dataclass
class LossConfig:
    caption_weight: float = at_least(1.0, 0)  # α
    cam_weight: float = at_least(1.0, 0)  # λ; 0 = the "nocam" ablation
    divergence: str = choice("js", DIVERGENCES)
    grad_to: str = choice("both", GRAD_TO)  # which side the disagreement loss trains
    warmup_epochs: float = at_least(1.0, 0)  # λ ramps up over these epochs, from the CAM loss's start
    # the CAM loss starts once epoch ≥ cam_start_epoch and (if > 0) a validation top-1 ≥ cam_start_acc1 was seen:
    # agreement between heads that do not yet classify is agreement on nothing (0, 0: from the first step)
    cam_start_epoch: float = at_least(0.0, 0)
    cam_start_acc1: float = between(0.0, 0.0, 1.0)
    doubly_stochastic: float = at_least(0.0, 0)
    # supervised word attention (Liu et al. 2017): weight of the cross-entropy between the attention at a word that
    # names a part (its noun, or an attribute word describing it) and that part's mask on the feature map; needs
    # per-image part masks (synthetic data only); 0 = off, the captioner finds where to look on its own
    part_attention: float = at_least(0.0, 0)
    label_smoothing: float = fraction(0.0)
    # all | content: Q averages the attention of every generated word or only of the attribute and part
    # words (attention at "the" is no claim about the class)
    attention_words: str = choice("all", ATTENTION_WORDS)
    # attention | oracle: Q is the captioner's attention, or (the positive control) the image's ground-truth
    # class-defining part masks pooled to the feature map (synthetic data only; the captioner then trains on its
    # caption loss alone)
    q_source: str = choice("attention", Q_SOURCES)
    # Self-critical training (SCST, CIDEr-D reward, k samples per image, mean-of-others baseline) for the
    # last scst_epochs epochs; 0 = cross-entropy only. Word-level CE alone decodes to short looping captions.
    scst_epochs: float = at_least(0.0, 0)
    scst_samples: int = at_least(5, 2)
    # the CAM loss in the self-critical epochs too (Q from the sampled captions' attention); false: cross-entropy
    # epochs only, as the paper trains (it has no SCST)
    scst_cam: bool = True
    # a mixed objective in the self-critical epochs (Paulus et al. 2018): the policy loss plus this weight times the
    # teacher-forced cross-entropy of the batch's reference captions (0 = the policy loss alone). The CIDEr-D reward
    # favours the references' consensus (the class phrase) over what half of them say (the body colour); the
    # cross-entropy keeps the latter's words likely.
    scst_xe_weight: float = at_least(0.0, 0)
    # a repetition-aware reward in the self-critical epochs: CIDEr-D minus this weight per trigram that repeats an
    # earlier one of the same caption (0 = CIDEr-D alone; CIDEr-D's clipped counts barely punish a loop)
    scst_repeat_penalty: float = at_least(0.0, 0)


@dataclass
class OptimConfig:
    lr: float = above(1e-3, 0)
    weight_decay: float = at_least(1e-4, 0)
    encoder_lr_mult: float = at_least(1.0, 0)
    warmup_steps: int = at_least(100, 0)
    scheduler: str = choice("cosine", SCHEDULERS)  # cosine (after a linear warm-up) | none
    # the self-critical epochs' own rate: from scst_lr, a cosine to 0 over them (self-critical.pytorch trains SCST at
    # ~1/10 of its cross-entropy rate); null: the run's one schedule goes on through them. The cross-entropy epochs
    # are the same either way.
    scst_lr: float | None = above(None, 0)
    # the epochs over which the cosine decays to 0 (null: the run's own): e.g. 12 in a 9-epoch run keeps its 8
    # cross-entropy epochs on the default 12-epoch run's curve while scst_lr sets the last one's rate
    cosine_epochs: float | None = above(None, 0)


# Upper bounds of the decode settings: a checkpoint (untrusted) carries them, and a beam of 10**6 or a
# max_len of 10**7 would exhaust memory or run for hours (captions are < 100 tokens).
MAX_BEAM, MAX_CAPTION_LEN = 64, 512
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
MAX_IMAGE_SIZE = 2048  # a side the model sees; predict allocates size² per image
FIGURE_FORMATS = ("png", "pdf", "svg")


@dataclass
class DecodeConfig:
    beam_size: int = between(1, 1, MAX_BEAM)  # validation decoding (greedy is fast)
    test_beam_size: int = between(3, 1, MAX_BEAM)
    max_len: int = between(30, 1, MAX_CAPTION_LEN)
    length_penalty: float = unbounded(0.0)
    no_repeat_ngram: int = at_least(0, 0)  # n ≥ 1: no caption repeats an n-gram of tokens (a constraint); 0 = off


@dataclass
class MetricsConfig:
    meteor: bool = False  # METEOR via pycocoevalcap (needs Java; a JVM per evaluation, slow)
    part_radius: float = above(0.07, 0)  # part pointing: a hit within this fraction of the side (≈15 px at 224)
    cam_threshold: float = between(0.2, 0.0, 1.0)  # GT-known Loc, 0.2 as in the WSOL literature
    box_stages: list[str] = each_of(["test"], ("val", "test"))  # box localisation: slow (100 thresholds/image)


@dataclass
class ModelConfig:
    _target_: str = "jointcap.lit_module.JointCaptionModule"
    task: str = choice("joint", TASKS)
    monitor: str = "val/acc1"
    encoder: EncoderConfig | None = field(default_factory=EncoderConfig)
    embedding: EmbeddingConfig | None = field(default_factory=EmbeddingConfig)
    classifier: ClassifierConfig | None = field(default_factory=ClassifierConfig)
    captioner: CaptionerConfig | None = field(default_factory=CaptionerConfig)
    loss: LossConfig | None = field(default_factory=LossConfig)
    optim: OptimConfig | None = field(default_factory=OptimConfig)
    decode: DecodeConfig | None = field(default_factory=DecodeConfig)
    metrics: MetricsConfig | None = field(default_factory=MetricsConfig)
    channels_last: bool = False  # NHWC activations
    compile: bool = False  # torch.compile the encoder + embedding at fit start (in place; checkpoints unchanged)
    num_classes: int | None = at_least(None, 1)  # null: from the data (then stored in checkpoints)
    vocab_size: int | None = at_least(None, 1)


# -- data.source (conf/data/source/*.yaml, conf/data/synthetic.yaml → jointcap.data.*Source) --
@dataclass
class CUBSourceConfig:
    _target_: str = "jointcap.data.cub.CUBSource"
    root: str | None = None
    image_size: int = at_least(224, 1)
    download: bool = True
    split: str = choice("official", ("official", "zeroshot"))
    val_fraction: float = fraction(0.1)
    seed: int = at_least(0, 0)
    skip_bad: bool = False
    min_captions: int = at_least(10, 1)
    images_url: str | None = cub.IMAGES_URL
    images_md5: str | None = cub.IMAGES_MD5
    images_archive: str = "CUB_200_2011.tgz"
    images_folder: str = "CUB_200_2011"
    captions_url: str | None = None
    captions_gdrive_id: str | None = cub.CAPTIONS_GDRIVE_ID
    captions_md5: str | None = None
    captions_archive: str = "cvpr2016_cub.tar.gz"
    captions_folder: str = "cvpr2016_cub"
    workers: int | None = at_least(None, 1)


@dataclass
class FlowersSourceConfig:
    _target_: str = "jointcap.data.flowers.FlowersSource"
    root: str | None = None
    image_size: int = at_least(224, 1)
    download: bool = True
    split: str = choice("official", ("official", "zeroshot"))
    skip_bad: bool = False
    min_captions: int = at_least(10, 1)
    folder: str = "flowers-102"
    images_url: str | None = flowers.URL_PREFIX + "102flowers.tgz"
    images_md5: str | None = flowers.IMAGES_MD5
    labels_url: str | None = flowers.URL_PREFIX + "imagelabels.mat"
    labels_md5: str | None = flowers.LABELS_MD5
    setid_url: str | None = flowers.URL_PREFIX + "setid.mat"
    setid_md5: str | None = flowers.SETID_MD5
    captions_url: str | None = None
    captions_gdrive_id: str | None = flowers.CAPTIONS_GDRIVE_ID
    captions_md5: str | None = None
    captions_archive: str = "cvpr2016_flowers.tar.gz"
    captions_folder: str = "cvpr2016_flowers"
    workers: int | None = at_least(None, 1)


@dataclass
class SyntheticSourceConfig:
    _target_: str = "jointcap.data.synthetic.SyntheticSource"
    n_classes: int = at_least(24, 2)
    image_size: int = at_least(64, 16)
    n_train: int = at_least(4000, 1)
    n_val: int = at_least(500, 1)
    n_test: int = at_least(1000, 1)
    seed: int = at_least(0, 0)
    captions_per_image: int = at_least(10, 1)
    clutter: float = at_least(1.0, 0)


@dataclass
class HardSyntheticSourceConfig:
    """The hard benchmark's generator (jointcap.data.synthetic_hard.HardSyntheticSource; issue 11)."""

    _target_: str = "jointcap.data.synthetic_hard.HardSyntheticSource"
    n_classes: int = at_least(100, 2)
    image_size: int = at_least(80, 32)
    per_class: int = at_least(50, 1)  # training images per class; 10–20 = the low-data option
    val_per_class: int = at_least(5, 1)
    test_per_class: int = at_least(10, 1)
    seed: int = at_least(0, 0)
    captions_per_image: int = at_least(10, 1)
    clutter: float = at_least(0.5, 0)
    occlusion: float = at_least(0.15, 0)
    lighting: float = at_least(0.05, 0)
    shortcut: bool = False
    shortcut_p: float = at_least(0.95, 0)
    # how a reference chooses what to name: field_marks (class-defining parts first, nuisance parts sometimes;
    # issue 28, docs/datasets.md) or random_parts (a random 1–5 visible parts: the references before issue 28)
    captions: str = choice("field_marks", ("field_marks", "random_parts"))


SOURCES = {
    schema._target_: schema
    for schema in (CUBSourceConfig, FlowersSourceConfig, SyntheticSourceConfig, HardSyntheticSourceConfig)
}


# -- trainer (conf/trainer/*.yaml → lightning.pytorch.Trainer): the arguments jointcap's configs use ----
@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    max_epochs: int | None = at_least(None, -1)
    min_epochs: int | None = at_least(None, 0)
    max_steps: int | None = at_least(None, -1)
    log_every_n_steps: int | None = at_least(None, 1)
    num_sanity_val_steps: int | None = at_least(None, -1)
    accumulate_grad_batches: int | None = at_least(None, 1)
    check_val_every_n_epoch: int | None = at_least(None, 1)
    gradient_clip_val: float | None = at_least(None, 0)
    limit_train_batches: float | None = at_least(None, 0)
    limit_val_batches: float | None = at_least(None, 0)
    limit_test_batches: float | None = at_least(None, 0)
    enable_progress_bar: bool | None = None
    enable_checkpointing: bool | None = None
    benchmark: bool | None = None


# -- data (conf/data/*.yaml → jointcap.data.datamodule.JointDataModule) -----------------------
@dataclass
class DataConfig:
    _target_: str = "jointcap.data.datamodule.JointDataModule"
    source: Any = None  # checked against its own _target_'s arguments
    cache_root: str = "${paths.data_root}/cache"  # conf/paths/default.yaml
    batch_size: int = at_least(64, 1)
    eval_batch_size: int | None = at_least(128, 1)  # null: batch_size
    num_workers: int = at_least(2, 0)
    vocab_size: int = at_least(1000, 8)
    # unigram collapses to ~characters on small, repetitive corpora such as the synthetic captions
    tokenizer_type: str = choice("bpe", TOKENIZER_TYPES)
    max_caption_len: int = at_least(32, 3)
    # captions each training image brings to a step (Luo et al.'s seq_per_img): the encoder runs once per image,
    # the captioner on all k; more examples of a rare word per step for little time (the LSTM loop is dispatch-
    # bound on a CPU). 1: one caption drawn per visit
    captions_per_step: int = at_least(1, 1)
    augment: bool = True
    pin_memory: bool = True
    persistent_workers: bool = True
    seed: int = at_least(0, 0)  # training order and per-sample randomness: functions of (seed, epoch, index)
    prepare_data_per_node: bool = False  # false: only global rank 0 builds the cache; true: each node's rank 0


# -- top level (conf/config.yaml) -------------------------------------------------------------
@dataclass
class RunConfig:
    seed: int = between(0, 0, MAX_SEED)
    ckpt_path: str | None = "auto"  # auto | last | null | a checkpoint file
    skip_if_done: bool = False  # return at once when the run folder holds results.json
    test_after_fit: bool = True
    objective: str = "val/acc1"
    objective_mode: str = choice("max", ("min", "max"))
    # intra-op CPU threads of this job; auto: its share of the cores (jointcap/runtime/threads.py)
    threads: int | str = auto_or_at_least(1)


# -- the other entry points' options (conf/predict.yaml builds on PredictConfig; evaluate's are checked) ----
@dataclass
class PredictConfig:
    """`python -m jointcap.predict`'s options; conf/predict.yaml documents them."""

    ckpt_path: str | None = None  # required: a .ckpt file, or a run folder (its best checkpoint, else its last)
    images: Any = None  # required: image files and/or folders (searched recursively); a single path also works
    out_dir: str | None = None  # null: the Hydra run folder
    format: str = choice("png", FIGURE_FORMATS)
    image_size: int | None = between(None, 8, MAX_IMAGE_SIZE)  # null: the training image size in the checkpoint
    beam_size: int | None = between(None, 1, MAX_BEAM)  # null: the checkpoint's decode.test_beam_size
    batch_size: int = between(16, 1, 1024)  # images decoded, predicted and drawn at a time (bounds memory)
    workers: int = between(0, 0, 256)  # processes drawing the figures (0: in this process)
    figures: bool = True  # false: class and caption only (predictions.csv and the printed lines), no figures
    device: str = choice("auto", ("auto", "cpu", "cuda"))


@dataclass
class EvaluateMetricsOptions:
    meteor: bool | None = None
    part_radius: float | None = above(None, 0)
    cam_threshold: float | None = between(None, 0.0, 1.0)


@dataclass
class EvaluateReportOptions:
    gallery: int = between(24, 0, 10_000)


@dataclass
class EvaluateOptions:
    """`python -m jointcap.evaluate`'s own options (conf/evaluate.yaml; its groups are checked by `validate`)."""

    ckpt_path: str | None = None
    split: str = choice("test", ("val", "test"))
    data_from_run: bool = True
    beam_size: int | None = between(None, 1, MAX_BEAM)
    no_repeat_ngram: int | None = at_least(None, 0)
    length_penalty: float | None = unbounded(None)
    metrics: EvaluateMetricsOptions = field(default_factory=EvaluateMetricsOptions)
    report: EvaluateReportOptions = field(default_factory=EvaluateReportOptions)
    seed: int = between(0, 0, MAX_SEED)


def option_errors(cfg: DictConfig, schema: type, where: str) -> list[str]:
    """Problems of an entry point's own options (the keys `schema` declares; groups like data/trainer are
    `validate`'s): a bool key given "no", a beam of -2, an image size of "abc" … each named."""
    names = {f.name for f in dataclasses.fields(schema)}
    values = {k: v for k, v in _resolved(cfg).items() if k in names}
    return [f"{where}: {e}" for e in _value_errors(values, schema, "")]


T = typing.TypeVar("T")


def from_dict(schema: type[T], values: dict[str, Any] | None, where: str) -> T:
    """The dataclass `schema` from a plain dict (a section of hyper-parameters); a clear error for unknown keys."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cast(Any, schema))}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(names))})")
    return schema(**values)


def schema_problems(values: dict[str, Any], schema: type, where: str) -> list[str]:
    """Every type, range and choice problem of plain `values` (e.g. a checkpoint's hyper-parameters) against a
    dataclass schema, each naming its key (`where.key`); [] when they fit."""
    return _value_errors(values, schema, where)


def to_dict(section: Any) -> dict[str, Any]:
    """A dataclass section as the plain dict stored in hyper-parameters (checkpoints load with weights_only)."""
    return dataclasses.asdict(section)


# -- the schema as Hydra's base configs: the YAML files build on these and state only what differs ----
SCHEMA_NODES = {  # (config group, name) → schema; e.g. conf/model/joint.yaml's defaults list starts with `schema`
    ("model", "schema"): ModelConfig,
    ("data", "schema"): DataConfig,
    ("data/source", "cub_schema"): CUBSourceConfig,
    ("data/source", "flowers_schema"): FlowersSourceConfig,
    ("data/source", "synthetic_schema"): SyntheticSourceConfig,
    ("data/source", "synthetic_hard_schema"): HardSyntheticSourceConfig,
    ("", "predict_schema"): PredictConfig,  # conf/predict.yaml
}


def schema_defaults(schema: type) -> dict[str, Any]:
    """A schema's defaults as a plain container (untyped, so `validate` stays the one judge of values)."""
    return dataclasses.asdict(schema())


def cpu_precision() -> str:
    """The Lightning precision of `trainer=cpu`: bf16 autocast only where oneDNN has bf16 kernels (AVX-512/AMX);
    on an AVX2-only CPU bf16 is emulated and a training step is ~9x slower than fp32 (docs/performance.md)."""
    import torch  # here, not at the top: jointcap/__init__ sets the OpenMP wait policy before torch loads

    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def register_schemas() -> None:
    """Store the schema defaults in Hydra's ConfigStore under SCHEMA_NODES and register the resolvers of conf/
    (`jointcap.data_root`, `jointcap.cpu_precision`); done when this module is imported, before any composition."""
    store = ConfigStore.instance()
    for (group, name), schema in SCHEMA_NODES.items():
        store.store(group=group or None, name=name, node=schema_defaults(schema))
    OmegaConf.register_new_resolver("jointcap.data_root", download.data_root_setting, replace=True)
    OmegaConf.register_new_resolver("jointcap.cpu_precision", cpu_precision, replace=True)
    # ${jointcap.either:${a},b}: a unless it is null (predict's run folder follows out_dir= when given)
    OmegaConf.register_new_resolver("jointcap.either", _either, replace=True)


def _either(*values: Any) -> Any:
    """The first value that is not null (or None when all are)."""
    return next((v for v in values if v is not None), None)


register_schemas()

GROUPS = ("data", "model", "trainer", "logger", "callbacks")  # checked section by section below


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of a composed config; return quietly if none."""
    errors = _top_level_errors(cfg)
    if "model" in cfg:
        errors += _section_errors(cfg.model, ModelConfig, "model")
    if "data" in cfg:
        errors += _section_errors(cfg.data, DataConfig, "data")
        source = cfg.data.get("source")
        if source is None or not isinstance(source, DictConfig) or "_target_" not in source:
            errors.append("data.source: missing (a dataset source with a _target_, e.g. data=synthetic)")
        elif source._target_ in SOURCES:
            errors += _section_errors(source, SOURCES[source._target_], "data.source")
            errors += _batch_errors(cfg.data, source)
        else:
            errors += _target_key_errors(source, "data.source") + _annotation_errors(source, "data.source", set())
    errors += _oracle_errors(cfg)
    if cfg.get("trainer") is not None:
        errors += _target_key_errors(cfg.trainer, "trainer") + _section_errors(cfg.trainer, TrainerConfig, "trainer")
    for group in ("callbacks", "logger"):
        for name, entry in (cfg.get(group) or {}).items():
            if entry is not None:
                errors += _target_key_errors(entry, f"{group}.{name}") + _annotation_errors(
                    entry, f"{group}.{name}", set()
                )
    if errors:
        errors = list(dict.fromkeys(errors))
        raise ConfigError(
            f"invalid configuration ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  - " + "\n  - ".join(errors)
        )


def _oracle_errors(cfg: DictConfig) -> list[str]:
    """model.loss.q_source=oracle and model.loss.part_attention > 0: only on data with part masks (the synthetic
    sources); the oracle gives Q no parameters, so grad_to=captioner would train nothing."""
    try:
        loss: Any = OmegaConf.select(cfg, "model.loss", default=None)
        q_source = loss.get("q_source") if isinstance(loss, DictConfig) else None
        target = OmegaConf.select(cfg, "data.source._target_", default=None)
    except OmegaConfBaseException:
        return []  # an unresolvable value: reported by the section checks
    errors = []
    no_masks = target in (CUBSourceConfig._target_, FlowersSourceConfig._target_)
    weight = loss.get("part_attention") if isinstance(loss, DictConfig) else None
    if no_masks and isinstance(weight, (int, float)) and weight > 0:
        errors.append(
            f"model.loss.part_attention > 0 needs per-image part masks; {target.rsplit('.', 1)[-1]} has none "
            "(use data=synthetic or data=synthetic_hard, or model.loss.part_attention=0)"
        )
    if q_source != "oracle":
        return errors
    if no_masks:
        errors.append(
            f"model.loss.q_source=oracle needs per-image part masks; {target.rsplit('.', 1)[-1]} has none "
            "(use data=synthetic or data=synthetic_hard)"
        )
    if loss.get("grad_to") == "captioner":
        errors.append(
            "model.loss.grad_to=captioner with model.loss.q_source=oracle: the oracle Q has no parameters, "
            "so the CAM loss would train nothing (use both, classifier or embedding)"
        )
    return errors


def _batch_errors(data: DictConfig, source: DictConfig) -> list[str]:
    """A training batch larger than a training split whose size the config states: training would see nothing."""
    n_train: Any = _resolved(source).get("n_train")
    batch: Any = _resolved(data).get("batch_size")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (n_train, batch)) and 0 < n_train < batch:
        return [
            f"data.batch_size={batch}: larger than the training split (data.source.n_train={n_train}); "
            "no full training batch (the last partial one is dropped)"
        ]
    return []


def _top_level_errors(cfg: DictConfig) -> list[str]:
    """Unknown top-level keys, and the typed run settings."""
    declared = _declared_top_level()
    known = declared | set(GROUPS) | {"paths"} | {f.name for f in dataclasses.fields(RunConfig)}  # paths: a group
    errors = [
        f"{key}: unknown top-level key (known: {', '.join(sorted(known - {'defaults'}))}); "
        "declare new ones in conf/config.yaml"
        for key in map(str, cfg)
        if key not in known
    ]
    run = {k: cfg[k] for k in (f.name for f in dataclasses.fields(RunConfig)) if k in cfg}
    errors += _value_errors(run, RunConfig, "")
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "auto", "last") and not Path(str(ckpt)).expanduser().is_file():
        errors.append(f"ckpt_path={ckpt}: no such checkpoint file (use auto, last, null or an existing .ckpt)")
    return errors


@functools.cache
def _declared_top_level() -> frozenset[str]:
    """The top-level keys conf/config.yaml declares."""
    return frozenset(map(str, OmegaConf.load(PRIMARY_CONFIG).keys())) if PRIMARY_CONFIG.is_file() else frozenset()


def _section_errors(section: DictConfig, schema: type, prefix: str) -> list[str]:
    """Type/value errors of a `_target_` section, and keys neither the schema nor the target takes."""
    target = section.get("_target_", None)
    params: frozenset[str] | set[str] | str | None = _target_params(target) if target else set()
    if isinstance(params, str):
        return [f"{prefix}._target_={target}: {params}"]
    names = {f.name for f in dataclasses.fields(schema)}
    extra = {str(k) for k in section if k not in names}
    unknown = sorted(extra - params) if params is not None else []
    errors = [_unknown(prefix, k, names | (params or set())) for k in unknown]
    values = _resolved(section, errors, prefix)
    errors += _annotation_errors(section, prefix, names, values)
    return errors + _value_errors({k: v for k, v in values.items() if k in names}, schema, prefix)


def _resolved(section: DictConfig, errors: list[str] | None = None, prefix: str = "") -> dict[str, Any]:
    """The section's values resolved key by key; a `${hydra:…}` outside a Hydra run is left out, others noted."""
    out: dict[str, Any] = {}
    for key in map(str, section):
        try:
            node = section[key]
            out[key] = (
                OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
            )
        except OmegaConfBaseException as e:
            container = OmegaConf.to_container(section, resolve=False)
            raw = container.get(key) if isinstance(container, dict) else None
            if errors is not None and "${hydra:" not in str(raw):  # also inside a nested section (a profiler)
                errors.append(f"{prefix}.{key}: {str(e).splitlines()[0]}")
    return out


def _annotation_errors(
    section: DictConfig, prefix: str, skip: set[str], values: dict[str, Any] | None = None
) -> list[str]:
    """Values (outside `skip`) that do not fit the type annotation of the `_target_`'s argument of that name."""
    hints = _target_hints(section.get("_target_", None))
    errors = []
    for key, value in (_resolved(section) if values is None else values).items():
        if str(key).startswith("_") or key in skip or key not in hints:
            continue
        if _fits(value, hints[key]) is False:
            errors.append(f"{prefix}.{key}={value!r}: must be {_describe(hints[key])}")
    return errors


def _fits(value: Any, ann: Any) -> bool | None:
    """Whether `value` fits annotation `ann`: True, False, or None when it cannot tell (complex types)."""
    origin = typing.get_origin(ann)
    if ann is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        results = [_fits(value, a) for a in typing.get_args(ann)]
        return True if True in results else (None if None in results else False)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(ann))
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ann is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or ann in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or ann is dict:
        return isinstance(value, dict)
    return None


def _describe(ann: Any) -> str:
    """An annotation in words, for error messages."""
    text = str(ann).replace("typing.", "").replace("NoneType", "null").replace("<class '", "").replace("'>", "")
    return text + " (NaN/inf not allowed)" * (ann is float or float in typing.get_args(ann))


@functools.cache
def _target_hints(target: str | None) -> dict[str, Any]:
    """Resolved type annotations of `target`'s arguments ({} when they cannot be resolved)."""
    if target is None:
        return {}
    try:
        obj = get_object(target)
        return typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # NameError on a forward reference, an import error (reported elsewhere)…
        return {}


def _value_errors(values: dict[str, Any], schema: type, prefix: str) -> list[str]:
    """Type, range and choice errors of `values` against a dataclass schema (recursing into nested ones)."""
    errors: list[str] = []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    dotted = f"{prefix}." if prefix else ""
    for key, value in values.items():
        if key not in fields:
            errors.append(_unknown(prefix, key, set(fields)))
            continue
        nested = _dataclass_of(fields[key].type)
        if nested is not None and value is not None:
            if not isinstance(value, dict):
                keys = ", ".join(f.name for f in dataclasses.fields(nested))
                errors.append(f"{dotted}{key}={value!r}: must be a mapping with keys {keys}")
            else:
                errors += _value_errors(value, nested, f"{dotted}{key}")
            continue
        meta = fields[key].metadata
        if value in meta.get("also", ()):  # a word allowed besides the typed values (threads=auto)
            continue
        problem = _strict_type_problem(value, meta.get("type", _hints(schema)[key])) or _range_problem(value, meta)
        if problem:
            errors.append(f"{dotted}{key}={value!r}: {problem}" + "".join(f" or {w}" for w in meta.get("also", ())))
    return errors


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _strict_type_problem(value: Any, ann: Any) -> str | None:
    """The type check of a schema field: exact (a YAML 'no' or '5' is a string, whatever OmegaConf would convert)."""
    union = typing.get_origin(ann) in (Union, types.UnionType)
    optional = union and type(None) in typing.get_args(ann)
    args = [a for a in typing.get_args(ann) if a is not type(None)] if union else [ann]
    if value is None:
        return None if optional or ann is Any else "must not be null"
    base = args[0] if len(args) == 1 else Any
    if base is bool and not isinstance(value, bool):
        return "must be true or false"
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "must be an integer"
    if base is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "must be a number"
    if base is str and not isinstance(value, (str, int, float)):  # numbers read as text (a folder named 2011)
        return "must be a string"
    if typing.get_origin(base) is list and not isinstance(value, list):
        return "must be a list"
    return None


def _range_problem(value: Any, meta: Any) -> str | None:
    """What is wrong with `value` given a field's `choices` / `each` / `min` / `max` / `above` / `below` metadata."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not NaN or ±inf)"
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of: {', '.join(str(c) for c in meta['choices'])}"
    if "each" in meta:
        bad = [v for v in value if v not in meta["each"]]
        return f"items must be among: {', '.join(meta['each'])} (not {', '.join(map(str, bad))})" if bad else None
    if "min" in meta and "max" in meta and not meta["min"] <= value <= meta["max"]:
        return f"must be in [{meta['min']}, {meta['max']}]"
    if "min" in meta and value < meta["min"]:
        return f"must be ≥ {meta['min']}" + (f" and < {meta['below']}" if "below" in meta else "")
    if "above" in meta and value <= meta["above"]:
        return f"must be > {meta['above']}"
    if "below" in meta and value >= meta["below"]:
        return f"must be < {meta['below']}" + (f" and ≥ {meta['min']}" if "min" in meta else "")
    return None


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass inside `X`, `X | None` or `Optional[X]` (annotations are strings here), else None."""
    name = str(annotation).removeprefix("Optional[").removesuffix("]").removesuffix(" | None")
    obj = globals().get(name)
    return obj if isinstance(obj, type) and dataclasses.is_dataclass(obj) else None


def _target_key_errors(section: DictConfig, prefix: str) -> list[str]:
    """Keys of an instantiable section that its `_target_` does not accept."""
    target = section.get("_target_", None)
    if target is None:
        return [f"{prefix}: no _target_ to instantiate"]
    params = _target_params(target)
    if isinstance(params, str):
        return [f"{prefix}._target_={target}: {params}"]
    if params is None:
        return []
    return [_unknown(prefix, str(k), set(params)) for k in section if not str(k).startswith("_") and k not in params]


@functools.cache
def _target_params(target: str) -> frozenset[str] | None | str:
    """Argument names `target` takes; None if it takes **kwargs; a message if it cannot be imported."""
    try:
        obj = get_object(target)
        sig = inspect.signature(obj)
    except Exception as e:  # ImportError, AttributeError, ValueError from inspect…
        return f"cannot import it ({type(e).__name__}: {e})"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(name for name, p in sig.parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def _unknown(prefix: str, key: str, allowed: set[str]) -> str:
    """`a.b.key: unknown key in a.b; did you mean a.b.near? (allowed: …)`."""
    where = prefix or "the top level"
    names = sorted(k for k in allowed if not k.startswith("_"))
    dotted = prefix + "." if prefix else ""
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean {dotted}{near[0]}?" if near else ""
    return f"{dotted}{key}: unknown key in {where}{hint} (allowed: {', '.join(names)})"


GPU_ACCELERATORS = ("gpu", "cuda")


def check_accelerator(cfg: DictConfig, cuda_available: bool) -> None:
    """ConfigError when the config asks for a GPU this machine lacks: one line saying what to do instead.

    Kept apart from `validate` (which judges a config on any machine, e.g. in tests on a CPU).
    """
    trainer = cfg.get("trainer")
    accelerator = str(trainer.get("accelerator", "auto")) if isinstance(trainer, DictConfig) else "auto"
    if accelerator in GPU_ACCELERATORS and not cuda_available:
        devices = trainer.get("devices", 1) if isinstance(trainer, DictConfig) else 1
        raise ConfigError(
            f"trainer.accelerator={accelerator}: this machine has no CUDA GPU (this preset needs "
            f"{'every visible GPU' if devices == 'auto' else 'a GPU' if devices == 1 else f'{devices} GPUs'}); "
            "add trainer=cpu to run it on the "
            "CPU (slow at the paper's size: see docs/performance.md), or run it on a machine with an NVIDIA GPU"
        )
