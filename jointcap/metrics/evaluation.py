"""One evaluation stage's metrics (val or test) as a collection: built once, fed per batch, computed per epoch.

`JointCaptionModule` runs the network and decodes; `EvalMetrics.update` turns one batch's outputs into
metric updates (accuracy, caption scores, CAM/attention agreement and localisation, part pointing, box
accuracy, word grounding) and `compute` returns every score under its logged name. Items are reachable
by name (`metrics["captions"]`) as in an `nn.ModuleDict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, ItemsView, Iterator
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from jointcap import losses
from jointcap.config import MetricsConfig
from jointcap.data.tokenizer import Tokenizer
from jointcap.metrics.caption_metric import CaptionScores
from jointcap.metrics.correctness import FactReader, image_fact_scores
from jointcap.metrics.localisation import (
    BoxAccuracy,
    LocalisationScores,
    gt_known_loc,
    part_pointing,
    upsample,
    word_attention,
    word_grounding,
)
from jointcap.metrics.text import tokenize


class EvalMetrics(nn.Module):
    """The metrics of one evaluation stage of a `task` (joint | classifier | captioner) model."""

    def __init__(
        self,
        stage: str,
        task: str,
        num_classes: int,
        options: MetricsConfig,
        divergence: str,
        max_len: int,
        info: dict[str, Any],
        decode: Callable[[list[int]], str],
        references: Callable[[int], list[str]],
        facts: Callable[[int], tuple[list[str], list[str]]],
    ) -> None:
        super().__init__()
        self.task, self.options, self.divergence = task, options, divergence
        self._decode, self._facts = decode, facts
        has_classifier, has_captioner = task != "captioner", task != "classifier"
        # disagreement: the configured divergence; disagreement_js: always Jensen–Shannon, so runs compare
        m: dict[str, nn.Module] = {"loss": MeanMetric(), "disagreement": MeanMetric(), "disagreement_js": MeanMetric()}
        if has_classifier:
            m["acc1"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
            m["acc5"] = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
            m["acc_per_class"] = MulticlassAccuracy(num_classes, top_k=1, average="macro")
        if has_captioner:
            m["captions"] = CaptionScores(
                decode=decode,
                references=references,
                max_len=max_len,
                meteor=bool(options.meteor),
                facts=facts,
                reader=FactReader.from_info(info),
            )
            m["word_grounding"] = MeanMetric()  # attribute words whose attention peak is on their part (masks)
            m["attn_part_pointing"] = MeanMetric()  # annotated part locations (CUB `parts`)
        m["localisation"] = LocalisationScores(class_parts=info.get("class_parts"))
        if has_classifier:
            m["cam_part_pointing"] = MeanMetric()
            m["cam_entropy"] = MeanMetric()  # entropy of P (the true class's CAM as a distribution) / log(h·w)
            if stage in options.box_stages:  # CUB `boxes`: Choe et al. 2020
                m["cam_gt_known_loc"] = MeanMetric()
                m["cam_box_v1"] = BoxAccuracy(iou_thresholds=(0.5,), multi_contour=False)
                m["cam_box_v2"] = BoxAccuracy()
        self.metrics = nn.ModuleDict(m)

    # -- a ModuleDict's read access ----------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self.metrics[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.metrics

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def items(self) -> ItemsView[str, nn.Module]:
        return self.metrics.items()

    def set_data(self, info: dict[str, Any]) -> None:
        """The data's facts (class parts, fact vocabulary), e.g. once a module loaded from a checkpoint sees data."""
        self["localisation"].class_parts = info.get("class_parts")
        if "captions" in self:
            self["captions"].reader = FactReader.from_info(info)

    def image_facts(self, index: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image caption correctness (class_recall, facts_right, facts_wrong) and whether the caption names a
        part twice (part_repeat), each (B,), for the test's per-image table of a split that stores facts; empty
        where the data has no fact reader (CUB, Flowers)."""
        reader = getattr(self.metrics["captions"], "reader", None) if "captions" in self else None
        if reader is None:
            return {}
        rows = []
        for i, ids in zip(index.tolist(), tokens.tolist(), strict=True):
            truth, class_truth = self._facts(i)
            words = tokenize(self._decode(ids))
            rows.append(
                {**image_fact_scores(reader.read(words), truth, class_truth), "part_repeat": reader.repeats_part(words)}
            )
        return {k: torch.tensor([r[k] for r in rows], dtype=torch.float32) for k in rows[0]} if rows else {}

    # -- per batch ---------------------------------------------------------------------------
    def update(
        self,
        batch: dict[str, torch.Tensor],
        loss: torch.Tensor,
        class_logits: torch.Tensor | None,
        cam: torch.Tensor | None,
        dec: Any,
        attn: torch.Tensor | None,
        attn_map: torch.Tensor | None,
        grid: tuple[int, int],
        info: dict[str, Any],
        tokenizer: Tokenizer | None,
    ) -> None:
        """One batch: its loss; logits (B, K) and the true class's CAM (B, h, w) of a classifier; a captioner's
        decoded captions `dec` (tokens (B, T), alphas (B, T, h·w)), their mean attention (B, h·w) and its map
        (B, h, w) on the embedding `grid`; the data's `info` and `tokenizer` (word grounding)."""
        self["loss"].update(loss)
        labels = batch["label"]
        if class_logits is not None:
            for k in ("acc1", "acc5", "acc_per_class"):
                self[k].update(class_logits, labels)
        if dec is not None:
            self["captions"].update(batch["index"], dec.tokens)
        if cam is not None:
            p = losses.cam_distribution(cam)
            self["cam_entropy"].update(losses.entropy(p) / math.log(p.shape[1]))
            if attn is not None:
                self["disagreement"].update(losses.divergence(p, attn, self.divergence))
                self["disagreement_js"].update(losses.divergence(p, attn, "js"))
        # a single-task model scores its one map (the agreement keys are then dropped)
        self["localisation"].update(
            cam if cam is not None else attn_map, attn_map if attn_map is not None else cam, batch.get("masks")
        )
        size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
        if batch.get("parts") is not None:
            self._update_part_pointing({"cam": cam, "attn": attn_map}, batch["parts"], size)
        if batch.get("boxes") is not None and cam is not None and "cam_box_v1" in self:
            self._update_boxes(cam, batch["boxes"], size)
        if dec is not None and batch.get("masks") is not None and info.get("part_words"):
            if tokenizer is None:
                raise RuntimeError("word grounding needs the tokenizer: call setup() with a datamodule first")
            self._update_word_grounding(dec, batch["masks"], grid, info, tokenizer)

    def _update_part_pointing(
        self, maps: dict[str, torch.Tensor | None], parts: torch.Tensor, size: tuple[int, int]
    ) -> None:
        """Per image with a visible part: does the map's peak lie within part_radius of one? (parts (B, P, 3))."""
        radius = float(self.options.part_radius) * max(size)
        for src, maps_ in maps.items():
            if maps_ is None:
                continue
            hits, visible = part_pointing(maps_.float(), parts.float(), size, radius)  # (B,), (B,)
            seen = visible > 0
            if seen.any():
                self[f"{src}_part_pointing"].update((hits[seen] > 0).float())

    def _update_boxes(self, cam: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> None:
        """GT-known Loc at cam_threshold, MaxBoxAcc (V1) and MaxBoxAccV2 of the true class's CAM vs boxes (B, 4)."""
        up = upsample(cam.float(), size, mode="bicubic")  # (B, S, S) as wsolevaluation: cv2.INTER_CUBIC
        hits = gt_known_loc(up, boxes, threshold=float(self.options.cam_threshold))  # (B,) bool on the CPU
        self["cam_gt_known_loc"].update(hits.float().to(cam.device))
        self["cam_box_v1"].update(up, boxes)
        self["cam_box_v2"].update(up, boxes)

    def _update_word_grounding(
        self, dec: Any, masks: torch.Tensor, grid: tuple[int, int], info: dict[str, Any], tokenizer: Tokenizer
    ) -> None:
        """Attribute words (e.g. "red") whose attention peaks on the part they describe ("crown"), masks (B,P,S,S)."""
        attn_words, words = word_attention(dec.tokens, dec.alphas, tokenizer, grid)  # (B, W, h, w)
        hits, count = word_grounding(
            attn_words, words, info["part_words"], frozenset(info.get("attribute_words", ())), masks
        )
        if count:
            self["word_grounding"].update(torch.tensor(hits / count, device=dec.tokens.device), weight=count)

    # -- per epoch ---------------------------------------------------------------------------
    def compute(self) -> dict[str, float]:
        """Every score of the metrics that saw data, under its logged name (without the stage prefix)."""
        values: dict[str, float] = {}
        for name, metric in self.metrics.items():
            assert isinstance(metric, Metric)
            if not metric.update_called:
                continue
            result = metric.compute()
            if name == "localisation":
                result = self._own_maps(result)
            elif name.startswith("cam_box_"):
                result = box_scores(name, result)
            if isinstance(result, dict):
                values.update({k: float(v) for k, v in result.items()})
            else:
                values[name] = float(result)
        return values

    def reset(self) -> None:
        """Clear every metric for the next epoch."""
        for metric in self.metrics.values():
            assert isinstance(metric, Metric)
            metric.reset()

    def _own_maps(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep the localisation scores of the maps this model really has."""
        if self.task == "joint":
            return scores
        keep = "cam_" if self.task == "classifier" else "attn_"
        return {k: v for k, v in scores.items() if k.startswith(keep)}


def box_scores(name: str, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BoxAccuracy's keys under this metric's name: cam_max_box_acc(_threshold) (V1, δ=0.5), cam_max_box_acc_v2, …"""
    if name == "cam_box_v1":
        return {"cam_max_box_acc": scores["max_box_acc"], "cam_max_box_acc_threshold": scores["best_threshold_iou50"]}
    return {("cam_max_box_acc_v2" if k == "max_box_acc" else f"cam_{k}_v2"): v for k, v in scores.items()}
