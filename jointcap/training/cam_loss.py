"""The CAM disagreement term of a training step: which Q, which words, which parameters it trains, and when."""

from __future__ import annotations

import math

import torch

from jointcap import losses
from jointcap.config import LossConfig
from jointcap.data.tokenizer import PAD_ID, Tokenizer
from jointcap.models.joint import JointModel
from jointcap.training import oracle
from jointcap.training.cam_schedule import CamSchedule


class CamLoss:
    """D(P, Q) with P the true class's CAM and Q the captioner's attention over `attention_words` (or the oracle
    masks, `q_source`), its gradient routed to exactly the parameters `grad_to` names, λ from `CamSchedule`."""

    def __init__(self, cfg: LossConfig) -> None:
        if cfg.attention_words not in losses.ATTENTION_WORDS:
            raise ValueError(
                f"model.loss.attention_words must be one of {losses.ATTENTION_WORDS}, got {cfg.attention_words!r}"
            )
        if cfg.cam_weight < 0:
            raise ValueError(f"model.loss.cam_weight must be ≥ 0, got {cfg.cam_weight}")
        self.cfg = cfg
        self.divergence = losses.DisagreementLoss(cfg.divergence, cfg.grad_to)
        self.schedule = CamSchedule(cfg.cam_weight, cfg.warmup_epochs, cfg.cam_start_epoch, cfg.cam_start_acc1)
        self.content_words: frozenset[str] = frozenset()  # attribute and part words (the data's info)
        self.tokenizer: Tokenizer | None = None

    def set_data(self, info: dict, tokenizer: Tokenizer | None) -> None:
        """The data's content words and tokenizer (for `attention_words=content`)."""
        self.content_words = frozenset(info.get("attribute_words", ())) | frozenset(info.get("part_words", ()))
        self.tokenizer = tokenizer

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) the words whose attention forms Q: every real word, or only content (attribute and part) words."""
        real = tokens != PAD_ID
        if self.cfg.attention_words == "all" or not self.content_words:
            return real
        if self.tokenizer is None:
            raise RuntimeError("model.loss.attention_words=content needs the tokenizer")
        rows = tokens.tolist()  # host copy: the word split is a Python walk over the pieces
        mask = torch.tensor(self.tokenizer.word_mask(rows, self.content_words), dtype=torch.bool, device=tokens.device)
        # a caption without a content word falls back to all its words (its Q stays a distribution)
        return torch.where(mask.any(1, keepdim=True), mask, real)

    def terms(
        self,
        net: JointModel,
        emb: torch.Tensor,
        labels: torch.Tensor,
        attention: torch.Tensor,
        class_mask: torch.Tensor | None,
        route: bool,
    ) -> dict[str, torch.Tensor]:
        """{"dis": D(P, Q), "cam_entropy": H(P) / log(h·w), 1 = flat} of the true class's CAM on `emb` (B, D, h, w)
        and Q: the attention (B, h·w), or with `q_source=oracle` the class-part masks `class_mask` (B, S, S) pooled
        to the map (no "dis" where the batch has none). With `route` (a training step with λ > 0), D's gradient
        goes to exactly the parameters `grad_to` names: both (all), captioner (its own only), classifier (the
        class weights only), embedding (the embedding + encoder only), cam (the CAM's side: class weights,
        embedding and encoder; the attention is a fixed target)."""
        grad_to = self.cfg.grad_to
        if grad_to == "embedding":  # the class weights get no gradient through this CAM
            cam = net.cam(emb, labels, weights_grad=False)
        else:
            cam = net.cam(emb.detach() if grad_to == "classifier" else emb, labels)
        p = losses.cam_distribution(cam.detach())  # (B, h·w); its entropy shows agreement by flattening P
        terms = {"cam_entropy": losses.entropy(p).mean() / math.log(p.shape[1])}
        if self.cfg.q_source == "oracle":
            if class_mask is None:
                return terms  # evaluated on data without masks: no oracle to agree with
            q, valid = oracle.oracle_q(class_mask, (int(emb.shape[-2]), int(emb.shape[-1])))
            terms["dis"] = self.divergence(cam, q, valid.float())
        else:
            terms["dis"] = self.divergence(cam, attention)  # detaches P (captioner) or Q (classifier)
        if not route:
            return terms
        if grad_to == "captioner":  # Q still reaches the embedding through the attention: cut that path
            terms["dis"] = losses.cut_gradient(terms["dis"], [emb])
        elif grad_to == "embedding":  # Q's gradient reaches the embedding through the captioner, not its weights
            cap = net.captioner
            terms["dis"] = losses.cut_gradient(terms["dis"], list(cap.parameters()) if cap is not None else [])
        return terms

    def never_started(self) -> str | None:
        """Why a finished fit never used the loss it asked for (λ > 0, start never reached); None if it did."""
        s = self.schedule
        if s.cam_weight <= 0 or s.started_at is not None:
            return None
        return (
            f"the CAM loss never started: model.loss.cam_start_epoch={s.start_epoch}, cam_start_acc1={s.start_acc1} "
            f"(a validation top-1 that high was {'' if s.acc_reached else 'not '}seen); this run trained as λ = 0"
        )
