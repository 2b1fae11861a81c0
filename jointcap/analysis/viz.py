"""Figures of where the model looks: an image with its CAM, mean caption attention and per-word attention.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display needed).
Shared by `jointcap.predict` (one figure per image) and the media callback (a grid of images).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jointcap.metrics.localisation import normalise_map, upsample

CMAP = "jet"
ALPHA = 0.45


@dataclass
class Panel:
    """One square of a figure: the image, optionally under a heat map, with a title."""

    title: str
    heat: torch.Tensor | None = None  # (h, w) on the embedding grid


def wrap_lines(text: str, width: int) -> str:
    """Wrap each line of `text` to `width` characters, keeping its line breaks."""
    return "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, width) or [""]))


def heat_to_image(heat: torch.Tensor, size: int) -> np.ndarray:
    """(h, w) map → (size, size) float in [0, 1], bilinearly upsampled then min-max normalised."""
    return normalise_map(upsample(heat.detach().float().cpu()[None], (size, size)))[0].numpy()


def draw_panel(ax: Axes, image: np.ndarray, panel: Panel, fontsize: float = 8) -> None:
    """Image (S, S, 3) uint8 with the panel's heat map overlaid through the colormap."""
    ax.imshow(image, interpolation="bilinear")
    if panel.heat is not None:
        ax.imshow(heat_to_image(panel.heat, image.shape[0]), cmap=CMAP, alpha=ALPHA, vmin=0, vmax=1, interpolation="bilinear")
    ax.set_title(panel.title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def explanation_panels(cam: torch.Tensor | None, mean_attn: torch.Tensor | None, words: list[str],
                       word_maps: torch.Tensor | None, class_title: str = "CAM") -> list[Panel]:
    """Image, CAM, mean attention, then one panel per generated word (word_maps (W, h, w))."""
    panels = [Panel("image")]
    if cam is not None:
        panels.append(Panel(class_title, cam))
    if mean_attn is not None:
        panels.append(Panel("mean attention", mean_attn))
    if word_maps is not None:
        panels += [Panel(f'"{w}"', word_maps[k]) for k, w in enumerate(words)]
    return panels


def image_figure(image: np.ndarray, panels: list[Panel], suptitle: str, columns: int = 6, inch: float = 1.9) -> Figure:
    """One image explained: its panels on a grid `columns` wide, the suptitle (class, caption) on top."""
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(cols * inch, rows * inch + 0.7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        draw_panel(ax, image, panel)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(wrap_lines(suptitle, 24 * cols), fontsize=9)
    fig.tight_layout()
    return fig


def grid_figure(images: list[np.ndarray], rows: list[list[Panel]], captions: list[str], inch: float = 1.8) -> Figure:
    """Several images, one row each (image, CAM, attention …), a caption text under each row."""
    cols = max(len(r) for r in rows)
    fig = Figure(figsize=(cols * inch + 3.2, len(rows) * inch))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols + 1, squeeze=False, gridspec_kw={"width_ratios": [1] * cols + [1.8]})
    for r, (image, panels, text) in enumerate(zip(images, rows, captions)):
        for c in range(cols):
            if c < len(panels):
                draw_panel(axes[r, c], image, panels[c], fontsize=7)
            else:
                axes[r, c].axis("off")
        axes[r, cols].axis("off")
        axes[r, cols].text(0, 0.5, wrap_lines(text, 38), fontsize=6.5, va="center", family="monospace")
    fig.tight_layout()
    return fig


def figure_array(fig: Figure) -> np.ndarray:
    """The rendered figure as (H, W, 3) uint8."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
