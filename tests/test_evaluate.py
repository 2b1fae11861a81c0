"""The evaluation wiring: box / part / word-grounding metrics on hand-made maps, and `jointcap.evaluate`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from jointcap.data.tokenizer import PAD_ID, Tokenizer
from jointcap.evaluate import EvaluateError, check_compatible
from jointcap.lit_module import IMAGENET_MEAN, JointCaptionModule
from jointcap.metrics.evaluation import box_scores as _box_scores
from jointcap.models.captioner import Decoded
from tests.conftest import run_cli
from tests.helpers.ckpt import TinyRun  # the `tiny_run` fixture is a plugin of conftest.py

S, GRID = 64, 8  # image side and embedding grid of the hand-made module (stage 2, stride 8)
CAPTIONS = [
    "a bird with a red crown and blue wings",
    "a small bird with a blue crown and red wings",
    "the bird has a red head",
    "this bird has blue wings and a red crown",
] * 4


def _module() -> tuple[JointCaptionModule, Tokenizer]:
    """A tiny joint module with a tokenizer and synthetic-like dataset facts."""
    tok = Tokenizer.train(CAPTIONS, vocab_size=40)
    m = JointCaptionModule(
        encoder={"name": "resnet18", "weights": None, "stage": 2, "output_stride": 8},
        embedding={"dim": 16},
        captioner={"embed_dim": 8, "hidden_dim": 16, "attn_dim": 8},
        decode={"max_len": 32, "test_beam_size": 1},
        num_classes=3,
        vocab_size=tok.vocab_size,
    )
    m.tokenizer = tok
    m.info = {"part_words": {"crown": 0, "head": 0, "wings": 1}, "attribute_words": ["red", "blue"]}
    return m.eval(), tok


def _peaks(cells: list[tuple[int, int]]) -> torch.Tensor:
    """One map per image (B, GRID, GRID), 1 at the given cell, 0 elsewhere."""
    maps = torch.zeros(len(cells), GRID, GRID)
    for b, (r, c) in enumerate(cells):
        maps[b, r, c] = 1.0
    return maps


def test_box_and_part_metrics_on_hand_made_cams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Image 0's CAM peaks on its box and part, image 1's far from them: every score is 1/2."""
    module, tok = _module()
    cams = _peaks([(3, 3), (0, 0)])  # cell (3, 3) covers pixels 24..31; its upsampled peak is at (27, 27)
    monkeypatch.setattr(module.net, "cam", lambda emb, classes: cams.to(emb.dtype))
    batch = {
        "image": torch.zeros(2, 3, S, S) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        "label": torch.tensor([0, 1]),
        "index": torch.tensor([0, 1]),
        "tokens": torch.tensor([tok.encode(CAPTIONS[0], 32)] * 2),
        # x, y, w, h; image 0's bicubically upsampled spike spans pixels 21..34 at the CAM threshold 0.2
        "boxes": torch.tensor([[20.0, 20.0, 16.0, 16.0], [40.0, 40.0, 20.0, 20.0]]),
        "parts": torch.tensor(
            [[[27.0, 27.0, 1.0], [0.0, 0.0, 0.0]], [[50.0, 50.0, 1.0], [60.0, 5.0, 1.0]]]
        ),  # x, y, visible
    }
    with torch.no_grad():
        record = module._eval_step(batch, "test")
    m = module.eval_metrics["test"]
    assert float(m["cam_gt_known_loc"].compute()) == pytest.approx(0.5)
    v1 = _box_scores("cam_box_v1", m["cam_box_v1"].compute())
    v2 = _box_scores("cam_box_v2", m["cam_box_v2"].compute())
    assert float(v1["cam_max_box_acc"]) == pytest.approx(0.5)
    assert {"cam_max_box_acc_v2", "cam_box_acc_iou30_v2", "cam_box_acc_iou70_v2"} <= set(v2)
    assert float(m["cam_part_pointing"].compute()) == pytest.approx(0.5)
    assert "cam_box_v1" not in module.eval_metrics["val"]  # box metrics are test-only by default
    assert {"index", "label", "pred", "prob", "tokens", "cam", "attn"} <= set(record)


def test_word_grounding_counts_attribute_words_on_their_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "red crown": attention on the crown → hit; "blue wings": attention off the wings → miss."""
    module, tok = _module()
    ids = tok.encode("a bird with a red crown and blue wings", 32)[1:]  # generated ids start after BOS
    words = tok.word_steps(ids)
    alphas = torch.full((len(ids), GRID * GRID), 1.0 / GRID**2)  # (T, L), uniform
    for word, steps in words:
        cell = {"red": 3 * GRID + 3, "blue": 0}.get(word)
        if cell is not None:
            alphas[steps] = torch.nn.functional.one_hot(torch.tensor(cell), GRID * GRID).float()
    tokens = torch.tensor([ids, ids])
    lengths = (tokens != PAD_ID).sum(1)
    monkeypatch.setattr(
        module.net,
        "generate",
        lambda emb, *a: Decoded(tokens, lengths, alphas.expand(2, -1, -1).clone(), torch.zeros(2)),
    )
    masks = torch.zeros(2, 2, S, S, dtype=torch.uint8)
    masks[:, 0, 24:32, 24:32] = 1  # the crown, under cell (3, 3)
    masks[:, 1, 40:60, 40:60] = 1  # the wings
    batch = {
        "image": torch.zeros(2, 3, S, S),
        "label": torch.tensor([0, 1]),
        "index": torch.tensor([0, 1]),
        "tokens": torch.tensor([tok.encode(CAPTIONS[0], 32)] * 2),
        "masks": masks,
    }
    with torch.no_grad():
        module._eval_step(batch, "val")
    assert float(module.eval_metrics["val"]["word_grounding"].compute()) == pytest.approx(0.5)


@pytest.mark.slow
def test_evaluate_writes_report_and_predictions(tiny_run: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = run_cli([f"ckpt_path={tiny_run.ckpt}", f"hydra.run.dir={out}"], cwd=tmp_path, module="jointcap.evaluate")
    assert "acc1" in proc.stdout and "cider_d" in proc.stdout, proc.stdout
    assert "but have passed in a `LightningDataModule`" not in proc.stdout + proc.stderr  # known noise, filtered
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "test" and report["n_images"] == 32 and report["dataset"] == "synthetic"
    expected = {
        "acc1",
        "acc5",
        "acc_per_class",
        "bleu1",
        "bleu4",
        "rouge_l",
        "cider_d",
        "disagreement",
        "peak_agreement",
        "cam_pointing_class",
        "attn_iou_object",
    }
    assert expected <= set(report["metrics"]), sorted(report["metrics"])
    assert len(report["per_class_accuracy"]) == 6 and len(report["per_class"]) == 6
    with open(out / "report.csv") as f:
        assert {r["metric"] for r in csv.DictReader(f)} == set(report["metrics"])
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and sorted(int(r["index"]) for r in rows) == list(range(32))
    for col in ("key", "true_class", "pred_class", "prob", "caption", "reference", "cam_pointing", "attn_pointing"):
        assert col in rows[0], col
    acc = sum(int(r["correct"]) for r in rows) / len(rows)
    assert acc == pytest.approx(report["metrics"]["acc1"], abs=1e-6)
    page = (out / "report.html").read_text(encoding="utf-8")  # self-contained, every metric, a gallery
    assert page.count("data:image/jpeg;base64,") == 24 and "cider_d" in page and "Per-class accuracy" in page
    assert "report.html: " in proc.stdout


def test_evaluate_no_repeat_ngram_overrides_the_decoding(tiny_run: TinyRun, tmp_path: Path) -> None:
    """`no_repeat_ngram=2` re-decodes a checkpoint so that no caption repeats a bigram (the tiny model loops)."""
    from jointcap.metrics.correctness import repeats_ngram
    from jointcap.metrics.text import tokenize

    out = tmp_path / "eval"
    args = [
        f"ckpt_path={tiny_run.ckpt}",
        f"hydra.run.dir={out}",
        "no_repeat_ngram=2",
        "beam_size=1",
        "report.gallery=0",
    ]
    run_cli(args, cwd=tmp_path, module="jointcap.evaluate")
    report = json.loads((out / "report.json").read_text())
    assert report["no_repeat_ngram"] == 2
    with open(out / "predictions.csv") as f:
        captions = [r["caption"] for r in csv.DictReader(f)]
    # the ban is on tokenizer pieces; a repeated word bigram would need a repeated piece bigram
    assert len(captions) == 32 and not any(repeats_ngram(tokenize(c), 2) for c in captions), captions[:4]
    bad = run_cli(
        [*args[:1], f"hydra.run.dir={tmp_path / 'bad'}", "no_repeat_ngram=-1"],
        cwd=tmp_path,
        module="jointcap.evaluate",
        check=False,
    )
    assert bad.returncode != 0 and "no_repeat_ngram=-1: must be ≥ 0" in bad.stderr  # (run_cli shows tracebacks)


def test_evaluate_length_penalty_overrides_beam_search_ranking(tiny_run: TinyRun, tmp_path: Path) -> None:
    """`length_penalty=p` re-ranks a checkpoint's beams by log p ÷ length^p: the report records it, a larger p never
    picks shorter captions on the whole, and a value that is not a number is refused by name."""

    def decode(p: float) -> tuple[dict, list[str]]:
        out = tmp_path / f"lp{p}"
        args = [f"ckpt_path={tiny_run.ckpt}", f"hydra.run.dir={out}", "beam_size=3", f"length_penalty={p}"]
        run_cli([*args, "report.gallery=0"], cwd=tmp_path, module="jointcap.evaluate")
        with open(out / "predictions.csv") as f:
            return json.loads((out / "report.json").read_text()), [r["caption"] for r in csv.DictReader(f)]

    (plain, short), (long_report, long) = decode(0.0), decode(3.0)
    assert plain["length_penalty"] == 0.0 and long_report["length_penalty"] == 3.0
    assert sum(len(c.split()) for c in long) >= sum(len(c.split()) for c in short)
    bad = run_cli(
        [f"ckpt_path={tiny_run.ckpt}", f"hydra.run.dir={tmp_path / 'bad'}", "length_penalty=long"],
        cwd=tmp_path,
        module="jointcap.evaluate",
        check=False,
    )
    assert bad.returncode != 0 and "length_penalty" in bad.stderr


def test_evaluate_refuses_data_the_model_was_not_trained_on() -> None:
    """Another class count or tokenizer is a clear error, not a crash deep in the model."""
    module, tok = _module()
    other = Tokenizer.train(["a different corpus of words entirely"] * 8, vocab_size=30)
    with pytest.raises(EvaluateError, match="3 classes, the data 4"):
        check_compatible(module, SimpleNamespace(num_classes=4, tokenizer=tok), Path("m.ckpt"))
    with pytest.raises(EvaluateError, match="tokenizer"):
        check_compatible(module, SimpleNamespace(num_classes=3, tokenizer=other), Path("m.ckpt"))
    check_compatible(module, SimpleNamespace(num_classes=3, tokenizer=tok), Path("m.ckpt"))
