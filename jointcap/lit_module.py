"""The LightningModule: the joint model (or a single-task baseline), its losses and its metrics."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn

from jointcap import losses
from jointcap.config import DecodeConfig, LossConfig, MetricsConfig, OptimConfig, from_dict, to_dict
from jointcap.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from jointcap.metrics.evaluation import EvalMetrics
from jointcap.models.joint import JointModel
from jointcap.training import oracle, part_attention, self_critical
from jointcap.training.cam_loss import CamLoss
from jointcap.training.optim import optimizer_and_schedule
from jointcap.training.precision import autocast_weight_cache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_STAGES = ("val", "test")
__all__ = ["JointCaptionModule", "autocast_weight_cache"]


class JointCaptionModule(L.LightningModule):
    """Encoder → embedding → classifier (CAM) + captioner (attention), trained with
    CE_cls + α·CE_cap + λ·D(CAM, attention) (+ β·doubly-stochastic attention).

    `task` = joint | classifier | captioner gives the ablation ladder's single-task rungs;
    `loss.cam_weight = 0` is the joint model without the CAM loss.
    The network is built in `setup` once the data tells the class count and vocabulary
    (both are then stored in the hyper-parameters, so checkpoints rebuild it directly).
    """

    mean: torch.Tensor  # (1, 3, 1, 1) buffers: ImageNet normalisation
    std: torch.Tensor
    eval_metrics: Any  # {stage: EvalMetrics} (an nn.ModuleDict), built with the network

    def __init__(
        self,
        task: str = "joint",
        encoder: dict | None = None,
        embedding: dict | None = None,
        classifier: dict | None = None,
        captioner: dict | None = None,
        loss: dict | None = None,
        optim: dict | None = None,
        decode: dict | None = None,
        channels_last: bool = False,
        monitor: str = "val/acc1",
        num_classes: int | None = None,
        vocab_size: int | None = None,
        metrics: dict | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # typed views of the hyper-parameters (stored as the plain dicts given, so checkpoints load weights-only)
        self.loss_cfg = from_dict(LossConfig, loss, "model.loss")
        self.optim_cfg = from_dict(OptimConfig, optim, "model.optim")
        self.decode_cfg = from_dict(DecodeConfig, decode, "model.decode")
        self.metrics_cfg = from_dict(MetricsConfig, metrics, "model.metrics")
        self.cam_loss = CamLoss(self.loss_cfg)  # the CAM disagreement term: Q, gradient routing, start and warm-up
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.model: JointModel | None = None
        self.tokenizer: Tokenizer | None = None
        self.info: dict = {}
        self._refs: list[list[str]] = []
        self._split_extra: dict = {}  # the evaluated split's extra fields (true facts per image)
        # self-critical training's reward: CIDEr-D against the training references (minus the repetition penalty)
        self._reward: self_critical.Reward | None = None
        self.image_size: int | None = None  # the training images' side, stored in checkpoints for predict
        if num_classes is not None and vocab_size is not None:
            self._build(num_classes, vocab_size)

    @property
    def net(self) -> JointModel:
        """The network; a clear error before `setup` (or num_classes and vocab_size) built it."""
        if self.model is None:
            raise RuntimeError("JointCaptionModule's network is not built yet: call setup() (with a datamodule) first")
        return self.model

    @property
    def tok(self) -> Tokenizer:
        """The tokenizer; a clear error before the data (or a checkpoint) gave it."""
        if self.tokenizer is None:
            raise RuntimeError("JointCaptionModule has no tokenizer yet: call setup() with a datamodule first")
        return self.tokenizer

    @property
    def datamodule(self) -> Any:
        """The trainer's data module (None without one)."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    # -- construction ----------------------------------------------------------------------
    def _build(self, num_classes: int, vocab_size: int) -> None:
        hp: Any = self.hparams
        self.model = JointModel(
            num_classes,
            vocab_size,
            hp.task,
            hp.encoder,
            hp.embedding,
            hp.classifier,
            hp.captioner,
            special_ids={"pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID},
        )
        if hp.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.eval_metrics = nn.ModuleDict({s: self._eval_metrics(num_classes, s) for s in EVAL_STAGES})

    def _eval_metrics(self, num_classes: int, stage: str) -> EvalMetrics:
        return EvalMetrics(
            stage,
            self.hparams["task"],
            num_classes,
            self.metrics_cfg,
            self.loss_cfg.divergence,
            self.decode_cfg.max_len,
            self.info,
            decode=self._decode,
            references=self._references,
            facts=self._facts,
        )

    def setup(self, stage: str) -> None:
        """Build the network from the data's facts (class count, tokenizer) if not yet built."""
        dm = self.datamodule
        if dm is not None:
            self.tokenizer = dm.tokenizer
            self.info = dm.info
            self.image_size = _data_image_size(dm) or self.image_size
        if self.model is None:
            if dm is None:
                raise RuntimeError("JointCaptionModule needs a datamodule (or num_classes and vocab_size) to build")
            self.hparams["num_classes"] = dm.num_classes
            self.hparams["vocab_size"] = dm.tokenizer.vocab_size
            self._build(dm.num_classes, dm.tokenizer.vocab_size)
        for m in self.eval_metrics.values():  # a module loaded from a checkpoint was built before it saw the data
            m.set_data(self.info)
        source = str(getattr(getattr(dm, "source", None), "name", "given"))
        if self.loss_cfg.q_source == "oracle" and dm is not None:  # the positive control's Q: true class-part masks
            if getattr(dm, "has_part_masks", False):
                dm.serve_class_masks()
            elif stage == "fit":
                oracle.refuse_without_masks(False, source)
        if self.loss_cfg.part_attention > 0 and dm is not None and stage == "fit":  # supervised word attention
            has = bool(getattr(dm, "has_part_masks", False)) and bool(self.info.get("part_words"))
            part_attention.refuse_without_masks(has, source)
            dm.serve_part_masks()
        self.cam_loss.set_data(self.info, self.tokenizer)

    def set_metric_options(self, **options: Any) -> None:
        """Change `model.metrics` settings (meteor, box_stages, …) and rebuild the evaluation metrics."""
        self.metrics_cfg = dataclasses.replace(self.metrics_cfg, **options)
        self.hparams["metrics"] = to_dict(self.metrics_cfg)
        if self.model is not None:
            self.eval_metrics = nn.ModuleDict(
                {s: self._eval_metrics(self.hparams["num_classes"], s) for s in EVAL_STAGES}
            ).to(self.device)
            for m in self.eval_metrics.values():
                m.set_data(self.info)

    @property
    def has_classifier(self) -> bool:
        return self.hparams["task"] != "captioner"

    @property
    def has_captioner(self) -> bool:
        return self.hparams["task"] != "classifier"

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def _references(self, index: int) -> list[str]:
        return self._refs[index]

    def _facts(self, index: int) -> tuple[list[str], list[str]]:
        """(true facts, class-defining facts) of an evaluation image; none where the data has no facts."""
        facts = self._split_extra.get("facts")
        if not facts:
            return [], []
        return facts[index], self._split_extra["class_facts"][index]

    # -- checkpoint extras: the tokenizer and dataset facts travel with the weights ---------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["jointcap"] = {
            "tokenizer": self.tokenizer.model_proto if self.tokenizer else None,
            "info": self.info,
            "image_size": self.image_size,
            "cam_schedule": self.cam_loss.schedule.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("jointcap", {})
        if extra.get("tokenizer") and self.tokenizer is None:
            self.tokenizer = Tokenizer(extra["tokenizer"], source="the checkpoint's tokenizer")
        self.info = self.info or extra.get("info", {})
        self.image_size = self.image_size or extra.get("image_size") or self.info.get("image_size")
        self.cam_loss.schedule.load_state_dict(extra.get("cam_schedule") or {})

    def configure_model(self) -> None:
        """`compile: true`: torch.compile the encoder and embedding in place (state-dict keys unchanged), once."""
        if self.hparams.get("compile") and self.model is not None and not getattr(self, "_compiled", False):
            self.model.compile_backbone()
            self._compiled = True

    # -- batches ---------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Drop all-padding caption columns while the batch is still on the host: no device sync per step."""
        if isinstance(batch, dict) and isinstance(batch.get("tokens"), torch.Tensor):
            batch["tokens"] = _trim(batch["tokens"])
        return batch

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """uint8 images → normalised float on the device (the loader never touches floats)."""
        images = batch["image"].float().div_(255.0)
        images = (images - self.mean) / self.std
        if self.hparams["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        batch["image"] = images
        return batch

    def self_critical_now(self) -> bool:
        """Whether this training step trains the captioner self-critically (the last `loss.scst_epochs` epochs)."""
        if not self.has_captioner or self._trainer is None or self.trainer.state.fn != "fit" or not self.training:
            return False
        return self_critical.in_phase(self.current_epoch, self.trainer.max_epochs or 0, self.loss_cfg.scst_epochs)

    def _self_critical(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """The loss terms of a self-critical step (`jointcap.training.self_critical`): the captioner's policy
        gradient, the classifier's cross-entropy and (`scst_cam`) the CAM loss with Q from the samples."""
        k, labels = int(self.loss_cfg.scst_samples), batch["label"]
        if self._reward is None:
            train_tokens = self.datamodule.datasets["train"].tokens
            self._reward = self_critical.reward(train_tokens, self.loss_cfg.scst_repeat_penalty)
        out = self.net(batch["image"], None)
        cap = self.net.captioner
        assert cap is not None  # self_critical_now() is False without a captioner
        sc = self_critical.train_pass(cap, out.emb, batch["index"], self._reward, k, self.decode_cfg.max_len)
        terms: dict[str, torch.Tensor] = {"cap": sc.loss, "reward": sc.reward}
        # the mixed objective (scst_xe_weight > 0): the references' cross-entropy beside the policy loss
        if self.loss_cfg.scst_xe_weight > 0:
            tokens = _captions(batch["tokens"])  # (B·k', T)
            word_logits, _ = self.net.teacher_force(out.emb, tokens)
            terms["xe"] = losses.caption_loss(word_logits, tokens[:, 1:], PAD_ID, self.loss_cfg.label_smoothing)
        if out.class_logits is not None:
            terms["cls"] = F.cross_entropy(out.class_logits.float(), labels)
            if self.loss_cfg.scst_cam:
                alphas = sc.alphas
                q = losses.mean_attention(alphas, self.cam_loss.attention_mask(sc.tokens)).view(-1, k, alphas.shape[-1])
                terms.update(self._disagreement(out.emb, labels, q.mean(1), batch.get("class_mask")))
        return terms, out

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """All loss terms of one teacher-forced pass (or a self-critical one late in training), and the pass."""
        if self.self_critical_now():
            return self._self_critical(batch)
        tokens, labels = _captions(batch["tokens"]), batch["label"]  # (B·k, T), image-major
        k = tokens.shape[0] // labels.shape[0]  # captions per image (data.captions_per_step)
        out = self.net(batch["image"], tokens if self.has_captioner else None)
        terms: dict[str, torch.Tensor] = {}
        if out.class_logits is not None:
            terms["cls"] = F.cross_entropy(out.class_logits.float(), labels)
        if out.word_logits is not None:
            targets = tokens[:, 1:]
            terms["cap"] = losses.caption_loss(out.word_logits, targets, PAD_ID, self.loss_cfg.label_smoothing)
            words = targets != PAD_ID
            if self.loss_cfg.doubly_stochastic > 0:
                terms["ds"] = losses.doubly_stochastic(out.alphas, words)
            if self.loss_cfg.part_attention > 0 and "token_part" in batch:
                grid = (int(out.emb.shape[-2]), int(out.emb.shape[-1]))
                token_part = batch["token_part"][..., 1 : tokens.shape[1]].reshape(targets.shape)  # (B·k, T-1)
                masks = batch["part_masks"].repeat_interleave(k, 0) if k > 1 else batch["part_masks"]
                terms["parts"] = part_attention.loss(out.alphas, token_part, masks, grid)
            if out.class_logits is not None:
                attention = losses.mean_attention(out.alphas, self.cam_loss.attention_mask(targets))  # (B·k, h·w)
                attention = attention.view(-1, k, attention.shape[-1]).mean(1)  # (B, h·w): Q over its k captions
                terms.update(self._disagreement(out.emb, labels, attention, batch.get("class_mask")))
        return terms, out

    def _disagreement(
        self, emb: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor, class_mask: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The CAM loss's terms (`CamLoss.terms`), its gradient routed while training with λ > 0."""
        route = self.training and torch.is_grad_enabled() and self.cam_weight_now() > 0
        return self.cam_loss.terms(self.net, emb, labels, attention, class_mask, route)

    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.loss_cfg
        total = terms.get("cls", 0.0) + c.caption_weight * terms.get("cap", 0.0)
        if "xe" in terms:
            total = total + c.caption_weight * c.scst_xe_weight * terms["xe"]
        if "dis" in terms:
            total = total + self.cam_weight_now() * terms["dis"]
        if "ds" in terms:
            total = total + c.doubly_stochastic * terms["ds"]
        if "parts" in terms:
            total = total + c.part_attention * terms["parts"]
        return cast(torch.Tensor, total)  # a tensor: every task has a cls or cap term

    def cam_weight_now(self) -> float:
        """λ now (`CamSchedule`: 0 before the CAM loss's start, then warmed up), from the trainer's fractional epoch."""
        if self._trainer is None or self.trainer.state.fn != "fit":
            return self.loss_cfg.cam_weight  # a checkpoint tested or validated on its own: the full λ
        steps = max(1, self.trainer.num_training_batches) if math.isfinite(self.trainer.num_training_batches) else 1
        progress = self.trainer.global_step / max(1, steps // max(1, self.trainer.accumulate_grad_batches))
        return self.cam_loss.schedule.weight(progress)

    # -- steps -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # the weight-cast cache is safe in self-critical steps too: their sampling runs with grad, in the one pass
        # the loss is taken from (a no_grad region would poison the cache: Lightning-AI/pytorch-lightning#20644)
        with autocast_weight_cache(self.device.type):
            terms, _ = self._losses(batch)
        total = self._total(terms)
        bs = batch["label"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        if self._logs_written_now():  # each self.log costs ~1 ms of Lightning bookkeeping
            for k, v in terms.items():
                self.log(f"train/{k}", v, prog_bar=k in ("cls", "cap"), batch_size=bs)
            self.log("train/cam_weight", self.cam_weight_now(), batch_size=bs)
        return total

    def on_train_end(self) -> None:
        message = self.cam_loss.never_started() if self.has_classifier and self.has_captioner else None
        if message:
            rank_zero_warn(message)

    def _logs_written_now(self) -> bool:
        """Whether the loggers record this training step (every `log_every_n_steps`); the loss terms are logged
        only then: the loggers get the same rows, the progress bar shows terms refreshed at that pace."""
        connector = getattr(self._trainer, "_logger_connector", None)  # what Lightning's own LearningRateMonitor asks
        return (
            self._trainer is None
            or bool(getattr(connector, "should_update_logs", True))
            or bool(getattr(self.trainer, "fast_dev_run", False))
        )

    def on_validation_epoch_start(self) -> None:
        self._eval_split("val")

    def on_test_epoch_start(self) -> None:
        self._eval_split("test")

    def _eval_split(self, split: str) -> None:
        """The references and true facts of the split about to be evaluated."""
        dm = self.datamodule
        self._refs = dm.references(split)
        self._split_extra = dm.splits[split].extra if hasattr(dm, "splits") and split in dm.splits else {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        with autocast_weight_cache(self.device.type):  # decoding steps reuse every weight too
            return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        with autocast_weight_cache(self.device.type):
            return self._eval_step(batch, "test")

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """Update the stage's metrics; return the per-image record (index, label, pred, prob, tokens, cam, attn)."""
        terms, out = self._losses(batch)
        labels = batch["label"]
        logits = cam = None
        record: dict[str, torch.Tensor] = {"index": batch["index"], "label": labels}
        if out.class_logits is not None:
            logits = out.class_logits.float()
            cam = self.net.cam(out.emb, labels)  # (B, h, w) of the true class
            record["prob"], record["pred"] = logits.softmax(1).max(1)
        attn = dec = None
        if self.has_captioner:
            c = self.decode_cfg
            beam = c.test_beam_size if stage == "test" else c.beam_size
            dec = self.net.generate(out.emb, beam, c.max_len, c.length_penalty, c.no_repeat_ngram)
            attn = losses.mean_attention(
                dec.alphas, self.cam_loss.attention_mask(dec.tokens)
            )  # (B, L) over generated words
        grid = (int(out.emb.shape[-2]), int(out.emb.shape[-1]))
        attn_map = attn.view(-1, *grid) if attn is not None else None  # (B, h, w)
        metrics = self.eval_metrics[stage]
        metrics.update(batch, self._total(terms), logits, cam, dec, attn, attn_map, grid, self.info, self.tokenizer)
        record.update(
            {
                k: v
                for k, v in (("tokens", dec.tokens if dec is not None else None), ("cam", cam), ("attn", attn_map))
                if v is not None
            }
        )
        if stage == "test" and dec is not None and self._split_extra.get("facts"):
            record.update(metrics.image_facts(batch["index"], dec.tokens))
        return record

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, stage: str) -> None:
        metrics = self.eval_metrics[stage]
        values = metrics.compute()
        metrics.reset()
        if stage == "val" and "acc1" in values and self._trainer is not None and not self.trainer.sanity_checking:
            self.cam_loss.schedule.observe_val_acc1(values["acc1"])
        self.log_dict({f"{stage}/{k}": v for k, v in values.items() if math.isfinite(v)}, sync_dist=False)

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self) -> OptimizerLRScheduler:
        scheduled = self.optim_cfg.scheduler != "none" or self.optim_cfg.scst_lr is not None
        total = int(self.trainer.estimated_stepping_batches) if scheduled else 1
        epochs = self.trainer.max_epochs or 0
        scst = self.loss_cfg.scst_epochs if self.net.captioner is not None else 0
        first = self_critical.first_epoch(epochs, scst)
        start = round(total * first / epochs) if first is not None and 0 <= first < epochs else None  # its first step
        span = self.optim_cfg.cosine_epochs
        cosine = round(total * span / epochs) if span is not None and epochs > 0 else None  # where the cosine ends
        return optimizer_and_schedule(self.net, self.net.encoder, self.optim_cfg, total, start, cosine)


def _data_image_size(dm: Any) -> int | None:
    """The side of the data module's cached images (all splits share it)."""
    split = next(iter(getattr(dm, "splits", {}).values()), None)
    return int(split.images.shape[1]) if split is not None else dm.info.get("image_size")


def _trim(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the columns that are padding in every row: the LSTM then runs only as long as the longest caption.

    Only on the host: on an accelerator the length would cost a sync every step, and Lightning
    batches were already trimmed before transfer (`on_before_batch_transfer`); untrimmed
    padding changes no loss or metric, it only runs the LSTM longer.
    """
    if tokens.device.type != "cpu":
        return tokens
    longest = int((tokens != PAD_ID).sum(-1).max())
    return tokens[..., : max(2, longest)]  # (B, T) or (B, k, T)


def _captions(tokens: torch.Tensor) -> torch.Tensor:
    """A batch's reference captions (B, T) or (B, k, T) → (B·k, T), image-major and trimmed (`_trim`)."""
    tokens = _trim(tokens)
    return tokens.flatten(0, 1) if tokens.dim() == 3 else tokens
