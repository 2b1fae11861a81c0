"""What each metric key means, for a reader: its group, a name, which direction is better, a one-line definition.

The training code logs raw keys (`test/cider_d`, `val/attn_iou_class`, …); tables and reports go through
`grouped(metrics)` so a reader sees named metrics in five groups, each once (`cider` is `cider_d` under
pycocoevalcap's name; `disagreement` is `disagreement_js` when the configured divergence is JS), with ↑/↓.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UP, DOWN, NEITHER = "↑", "↓", "·"


@dataclass(frozen=True)
class MetricInfo:
    """How a reader should read one metric key (without its `stage/` prefix)."""

    group: str
    name: str
    direction: str  # UP (higher is better), DOWN or NEITHER (a description, not a score)
    definition: str


CLASSIFICATION = "classification"
OVERLAP = "captions: overlap with the references"
CORRECTNESS = "captions: correctness"
LOCALISATION = "localisation"
AGREEMENT = "agreement (CAM vs attention)"
OBJECTIVE = "objective"
GROUPS = (CLASSIFICATION, OVERLAP, CORRECTNESS, LOCALISATION, AGREEMENT, OBJECTIVE)

_LOC = "the class-defining parts' masks (class) or the whole bird's (object)"
CATALOGUE: dict[str, MetricInfo] = {
    "acc1": MetricInfo(CLASSIFICATION, "top-1 accuracy", UP, "share of images whose top class is the true one"),
    "acc5": MetricInfo(CLASSIFICATION, "top-5 accuracy", UP, "share of images with the true class among the top 5"),
    "acc_per_class": MetricInfo(
        CLASSIFICATION, "mean per-class accuracy", UP, "top-1 accuracy of each class, averaged over classes"
    ),
    "cider_d": MetricInfo(
        OVERLAP,
        "CIDEr-D",
        UP,
        "tf-idf weighted 1–4-gram agreement with the image's references, length-penalised, ×10 (pycocoevalcap)",
    ),
    "bleu1": MetricInfo(OVERLAP, "BLEU-1", UP, "clipped unigram precision with a brevity penalty (corpus level)"),
    "bleu4": MetricInfo(OVERLAP, "BLEU-4", UP, "geometric mean of clipped 1–4-gram precisions, brevity-penalised"),
    "rouge_l": MetricInfo(OVERLAP, "ROUGE-L", UP, "longest common subsequence F-score with the best reference"),
    "meteor": MetricInfo(OVERLAP, "METEOR", UP, "unigram matching with stems and synonyms (pycocoevalcap, Java)"),
    "class_attr_f1": MetricInfo(
        CORRECTNESS,
        "class facts F1",
        UP,
        "F1 of the class-defining facts ('head red') a caption states, against the image's true ones",
    ),
    "class_attr_precision": MetricInfo(
        CORRECTNESS, "class facts precision", UP, "share of stated class-defining facts that are true of the image"
    ),
    "class_attr_recall": MetricInfo(
        CORRECTNESS, "class facts recall", UP, "share of the image's class-defining facts that the caption states"
    ),
    "attr_precision": MetricInfo(
        CORRECTNESS, "fact precision", UP, "share of all stated facts (part + attribute) that are true of the image"
    ),
    "attr_recall": MetricInfo(CORRECTNESS, "fact recall", UP, "share of the image's true facts that are stated"),
    "attr_f1": MetricInfo(CORRECTNESS, "fact F1", UP, "F1 of fact precision and recall"),
    "distinct_captions": MetricInfo(
        CORRECTNESS, "distinct captions", UP, "distinct captions / images (a constant caption gives 1/N)"
    ),
    "rep3": MetricInfo(CORRECTNESS, "repeated trigram", DOWN, "share of captions repeating a 3-gram (looping)"),
    "rep2": MetricInfo(CORRECTNESS, "repeated bigram", DOWN, "share of captions repeating a 2-gram"),
    "rep_part": MetricInfo(CORRECTNESS, "part named twice", DOWN, "share of captions naming one part twice"),
    "mean_len": MetricInfo(CORRECTNESS, "mean length (words)", NEITHER, "words per caption"),
    "vocab_used": MetricInfo(CORRECTNESS, "vocabulary used", NEITHER, "distinct words over all captions"),
    "cam_pointing_class": MetricInfo(
        LOCALISATION, "CAM pointing (class parts)", UP, f"share of images whose CAM peak falls on {_LOC}"
    ),
    "cam_pointing_object": MetricInfo(LOCALISATION, "CAM pointing (object)", UP, "the same against the whole bird"),
    "cam_iou_class": MetricInfo(
        LOCALISATION, "CAM IoU (class parts)", UP, f"IoU of the thresholded, normalised CAM with {_LOC}"
    ),
    "cam_iou_object": MetricInfo(LOCALISATION, "CAM IoU (object)", UP, "the same against the whole bird"),
    "attn_pointing_class": MetricInfo(
        LOCALISATION, "attention pointing (class parts)", UP, "as CAM pointing, for the mean caption attention"
    ),
    "attn_pointing_object": MetricInfo(LOCALISATION, "attention pointing (object)", UP, "the same, whole bird"),
    "attn_iou_class": MetricInfo(LOCALISATION, "attention IoU (class parts)", UP, "as CAM IoU, for the attention"),
    "attn_iou_object": MetricInfo(LOCALISATION, "attention IoU (object)", UP, "the same, whole bird"),
    "word_grounding": MetricInfo(
        LOCALISATION, "word grounding", UP, "attribute words whose attention peak lies on the part they describe"
    ),
    "cam_part_pointing": MetricInfo(LOCALISATION, "CAM part pointing", UP, "CAM peak near an annotated part (CUB)"),
    "attn_part_pointing": MetricInfo(
        LOCALISATION, "attention part pointing", UP, "attention peak near an annotated part (CUB)"
    ),
    "cam_gt_known_loc": MetricInfo(LOCALISATION, "GT-known Loc", UP, "CAM box IoU ≥ 0.5 at CAM threshold 0.2"),
    "cam_box_v1": MetricInfo(LOCALISATION, "MaxBoxAcc", UP, "box IoU ≥ 0.5 at the best CAM threshold (Choe 2020)"),
    "cam_box_v2": MetricInfo(LOCALISATION, "MaxBoxAccV2", UP, "mean over IoU 0.3/0.5/0.7, all contours"),
    "cam_entropy": MetricInfo(
        LOCALISATION, "CAM entropy", NEITHER, "entropy of the true class's CAM as a distribution / log(h·w): 1 = flat"
    ),
    "disagreement_js": MetricInfo(
        AGREEMENT, "CAM–attention JS divergence", DOWN, "Jensen–Shannon divergence of P (CAM) and Q (attention)"
    ),
    "disagreement": MetricInfo(
        AGREEMENT, "CAM–attention divergence (trained D)", DOWN, "the divergence the loss uses (model.loss.divergence)"
    ),
    "peak_agreement": MetricInfo(
        AGREEMENT, "peak agreement", UP, "share of images whose CAM and attention peak at the same location"
    ),
    "loss": MetricInfo(OBJECTIVE, "loss", DOWN, "the training objective on this split (CE + α·CE_cap + λ·D)"),
}
# keys left out of reader tables: aliases of another key, and detail that metrics.csv / results.json keep
ALIASES = {"cider": "cider_d"}
DETAIL = frozenset({"bleu2", "bleu3", "epoch"})


@dataclass(frozen=True)
class Row:
    """One line of a reader's table."""

    key: str  # the raw key, e.g. test/cider_d
    info: MetricInfo
    value: float


def split_key(key: str) -> tuple[str, str]:
    """`test/cider_d` → (`test`, `cider_d`); a key without a stage → (``, key)."""
    stage, _, name = key.rpartition("/")
    return stage, name


def grouped(metrics: dict[str, float]) -> dict[str, list[Row]]:
    """The metrics of one stage, by group (in GROUPS order, then unknown keys under 'other'), duplicates left out.

    `disagreement` is kept only when it differs from `disagreement_js` (another divergence was trained).
    """
    names = {split_key(k)[1]: k for k in metrics}
    out: dict[str, list[Row]] = {g: [] for g in (*GROUPS, "other")}
    for name, key in names.items():
        if name in ALIASES and ALIASES[name] in names or name in DETAIL:
            continue
        if name == "disagreement" and "disagreement_js" in names:
            same = metrics[key] == metrics[names["disagreement_js"]]
            if same or (math.isnan(metrics[key]) and math.isnan(metrics[names["disagreement_js"]])):
                continue
        info = CATALOGUE.get(name, MetricInfo("other", name, NEITHER, ""))
        out[info.group].append(Row(key, info, float(metrics[key])))
    order = {k: i for i, k in enumerate(CATALOGUE)}
    return {
        g: sorted(rows, key=lambda r: order.get(split_key(r.key)[1], len(order))) for g, rows in out.items() if rows
    }
