"""`report.html`: one self-contained page (inline CSS, images as data URIs) that `jointcap.evaluate` writes.

It shows what was evaluated and the run's settings (data, model, λ, epochs, seed), the metrics
grouped and named with their direction (↑/↓), definition and reference points (chance, a constant
caption, one reference against the others, a class template; `jointcap.metrics.catalogue`,
`jointcap.metrics.baselines`), per-class accuracy (worst classes first) and a gallery of test
images, worst errors first, with panel titles legible when printed: each
with its true and predicted class, the CAM, the mean attention and the attention at each
generated word, the generated caption and the reference captions. It opens offline in any
browser and is well-formed XML (XHTML syntax), so tools can parse it too.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from jointcap.analysis import viz
from jointcap.analysis.explain import explain
from jointcap.analysis.report import REFERENCE_NOTES
from jointcap.data.textsafe import clean_text
from jointcap.metrics.catalogue import DOWN, UP, grouped, split_key

if TYPE_CHECKING:
    from jointcap.lit_module import JointCaptionModule

# gallery figures: 4 panels a row of 2 in, titles at 12 pt, 110 dpi: a 9 in figure printed 7 in wide (A4) keeps
# titles at ~9 pt (the old 6 columns of 1.6 in at 8 pt printed at ~5 pt, ~7 px on screen)
GALLERY_COLUMNS = 4
GALLERY_INCH = 2.0
GALLERY_FONTSIZE = 12
GALLERY_DPI = 110


@dataclass
class GalleryItem:
    """One explained image of the gallery."""

    key: str
    true_class: str
    pred_class: str | None
    prob: float | None
    correct: bool | None
    caption: str
    references: list[str]
    jpeg: bytes = field(repr=False)  # the figure


def gallery_order(rows: list[dict[str, Any]]) -> list[int]:
    """Positions into `rows`, worst first: misclassified (most confident first), then correct (least confident first).

    Rows without a class prediction (a captioner alone) keep their order.
    """

    def rank(i: int) -> tuple:
        r = rows[i]
        if "correct" not in r:
            return (2, i)
        prob = float(r.get("prob") or 0.0)
        return (0, -prob, i) if not r["correct"] else (1, prob, i)

    return sorted(range(len(rows)), key=rank)


def gallery(
    module: JointCaptionModule,
    images: torch.Tensor,
    rows: list[dict[str, Any]],
    references: list[list[str]],
    beam_size: int | None = None,
    batch_size: int = 16,
    max_words: int = 14,
) -> list[GalleryItem]:
    """Explain `images` (N, 3, S, S) uint8, which belong to `rows`; one figure each (first `max_words` words)."""
    items: list[GalleryItem] = []
    for start in range(0, len(rows), batch_size):
        chunk = images[start : start + batch_size]
        ex = explain(module, chunk, beam_size)
        mean = ex.mean_attention()
        for b in range(chunk.shape[0]):
            row = rows[start + b]
            words = ex.words[b][:max_words]
            panels = viz.explanation_panels(
                ex.cam[b] if ex.cam is not None else None,
                mean[b] if mean is not None else None,
                words,
                ex.word_maps[b, : len(words)] if ex.word_maps is not None else None,
                class_title="CAM (predicted class)",
            )
            fig = viz.image_figure(
                chunk[b].permute(1, 2, 0).cpu().numpy(),
                panels,
                "",
                columns=GALLERY_COLUMNS,
                inch=1.6,
                fontsize=GALLERY_FONTSIZE,
            )
            items.append(
                GalleryItem(
                    key=str(row.get("key", "")),
                    true_class=str(row.get("true_class", "")),
                    pred_class=row.get("pred_class"),
                    prob=row.get("prob"),
                    correct=bool(row["correct"]) if "correct" in row else None,
                    caption=ex.captions[b],
                    references=list(references[row["index"]]) if row.get("index") is not None else [],
                    jpeg=viz.figure_bytes(fig, dpi=GALLERY_DPI, fmt="jpeg"),
                )
            )
    return items


def _e(value: Any) -> str:
    """Text for the page: cleaned (control characters would make it ill-formed) and escaped."""
    return html.escape(clean_text(str(value)), quote=True)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else _e(value)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1em;margin:.8em 0 .3em}
table{border-collapse:collapse;font-size:.9em}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta td:first-child{color:#666}.families{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.bar{display:inline-block;height:10px;background:#4a7fb5;vertical-align:middle}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin:14px 0;page-break-inside:avoid}
.card.wrong{border-left:6px solid #c0392b}.card.right{border-left:6px solid #27ae60}
.card img{max-width:100%;height:auto;display:block;margin:6px 0}
.tag{display:inline-block;padding:1px 7px;border-radius:10px;font-size:.8em;color:#fff;background:#888}
.tag.wrong{background:#c0392b}.tag.right{background:#27ae60}
.gen{font-weight:600}.refs{color:#555;margin:2px 0 0 0;padding-left:20px;font-size:.9em}
.note{color:#666;font-size:.85em}td.def{color:#555;font-size:.85em;max-width:460px}td.ref{font-size:.85em}
td.dir{text-align:center;font-weight:600}table.metrics{width:100%}
@media print{body{max-width:none;margin:0}.card img{max-width:100%}}
details summary{cursor:pointer;color:#345}
"""


def _metric_tables(metrics: dict[str, float], references: dict[str, dict[str, float]]) -> list[str]:
    """One table per metric group: name (raw key), direction, value, reference points, definition."""
    out = ["<h2>Metrics</h2>"]
    if not metrics:
        return [*out, '<p class="note">No metrics.</p>']
    out.append(f'<p class="note">{UP} higher is better, {DOWN} lower is better, · a description (no better side).</p>')
    for group, rows in grouped(metrics).items():
        out.append(f'<h3>{_e(group)}</h3><table class="metrics">')
        out.append("<tr><th>metric</th><th></th><th>value</th><th>reference points</th><th>definition</th></tr>")
        for row in rows:
            name = split_key(row.key)[1]
            refs = " · ".join(f"{ref} {vals[name]:.3f}" for ref, vals in references.items() if name in vals)
            out.append(
                f'<tr><td>{_e(row.info.name)} <span class="note">{_e(name)}</span></td>'
                f'<td class="dir">{_e(row.info.direction)}</td><td class="n">{_num(row.value)}</td>'
                f'<td class="ref">{_e(refs)}</td><td class="def">{_e(row.info.definition)}</td></tr>'
            )
        out.append("</table>")
    notes = [REFERENCE_NOTES[k.split(" ")[0]] for k in references if k.split(" ")[0] in REFERENCE_NOTES]
    if notes:
        out.append('<p class="note">Reference points, on the same images and scorer: ' + _e("; ".join(notes)) + ".</p>")
    return out


def render(
    report: dict[str, Any], per_class: list[dict[str, Any]], items: list[GalleryItem], n_references: int = 5
) -> str:
    """The page as an XHTML string."""
    metrics: dict[str, float] = report.get("metrics", {})
    out = [
        "<!DOCTYPE html>",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">',
        "<head>",
        '<meta charset="utf-8" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1" />',
        f"<title>jointcap report: {_e(report.get('dataset'))} {_e(report.get('split'))}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>jointcap evaluation: {_e(report.get('dataset') or 'dataset')}, {_e(report.get('split'))} split</h1>",
        '<table class="meta">',
    ]
    for label, key in (
        ("checkpoint", "checkpoint"),
        ("task", "task"),
        ("images", "n_images"),
        ("beam size", "beam_size"),
    ):
        out.append(f"<tr><td>{label}</td><td>{_e(report.get(key, '–'))}</td></tr>")
    out.append("</table>")

    settings: dict[str, str] = report.get("settings") or {}
    if settings:
        out.append("<h2>Run settings</h2>")
        out.append('<table class="meta">')
        out += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in settings.items()]
        out.append("</table>")
    out += _metric_tables(metrics, report.get("references") or {})

    rated = [c for c in per_class if c.get("accuracy") is not None]
    if rated:
        out.append(f'<h2>Per-class accuracy <span class="note">({len(rated)} classes, worst first)</span></h2>')
        out.append("<table><tr><th>class</th><th>images</th><th>accuracy</th><th></th></tr>")
        for c in sorted(rated, key=lambda c: (c["accuracy"], str(c["class"]))):
            width = int(round(160 * c["accuracy"]))
            out.append(
                f'<tr><td>{_e(c["class"])}</td><td class="n">{_e(c["n_images"])}</td>'
                f'<td class="n">{c["accuracy"]:.3f}</td><td><span class="bar" style="width:{width}px"></span></td></tr>'
            )
        out.append("</table>")

    if items:
        n_wrong = sum(1 for it in items if it.correct is False)
        out.append(
            f'<h2>Gallery <span class="note">({len(items)} images; {n_wrong} misclassified shown first, most '
            "confident errors first, then the least confident correct ones)</span></h2>"
        )
        out.append(
            f'<p class="note">Overlays: {_e(viz.NORMALISATION)}, colour map {_e(viz.CMAP)}. Panels: the image, the CAM '
            "of the predicted class, the attention averaged over the caption's words, "
            "then the attention at each word.</p>"
        )
        for it in items:
            state = "" if it.correct is None else (" right" if it.correct else " wrong")
            out.append(f'<div class="card{state}">')
            head = f"<b>{_e(it.key)}</b> · true: {_e(it.true_class)}"
            if it.pred_class is not None:
                verdict = "correct" if it.correct else "wrong"
                head += f' · predicted: {_e(it.pred_class)} ({_num(it.prob)}) <span class="tag{state}">{verdict}</span>'
            out.append(f"<div>{head}</div>")
            data = base64.b64encode(it.jpeg).decode("ascii")
            out.append(f'<img alt="CAM and attention of {_e(it.key)}" src="data:image/jpeg;base64,{data}" />')
            if it.caption:
                out.append(f'<div>generated: <span class="gen">{_e(it.caption)}</span></div>')
            if it.references:
                refs = "".join(f"<li>{_e(r)}</li>" for r in it.references[:n_references])
                out.append(f'<div>references:</div><ul class="refs">{refs}</ul>')
            out.append("</div>")
    out += [
        '<p class="note">Written by jointcap.evaluate. Self-contained: open it offline in any browser.</p>',
        "</body>",
        "</html>",
    ]
    return "\n".join(out) + "\n"


def write_html(path: Path, report: dict[str, Any], per_class: list[dict[str, Any]], items: list[GalleryItem]) -> Path:
    """Write the page atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(render(report, per_class, items), encoding="utf-8")
    os.replace(tmp, path)
    return path
