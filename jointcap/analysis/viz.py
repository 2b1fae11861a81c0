"""Figures of where the model looks: an image with its CAM, mean caption attention and per-word attention.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display needed).
Shared by `jointcap.predict` (one figure per image), `jointcap.evaluate`'s HTML report and the
media callback (a grid of images). Every overlay is drawn the same way: the map bilinearly
upsampled to the image (whatever its aspect ratio), min-max normalised per map to [0, 1], in one
perceptually uniform colour map at one opacity; figures carry a colour bar saying so.
Figures save as PNG, PDF or SVG (by the file's suffix).
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

CMAP = "inferno"  # perceptually uniform, prints in grey
ALPHA = 0.55
NORMALISATION = "per-map min–max (0 = least, 1 = most weight)"
BAR_LABEL = "weight (min–max per map)"
FORMATS = ("png", "pdf", "svg")


@dataclass
class Panel:
    """One square of a figure: the image, optionally under a heat map, with a title."""

    title: str
    heat: torch.Tensor | None = None  # (h, w) on the embedding grid


def wrap_lines(text: str, width: int) -> str:
    """Wrap each line of `text` to `width` characters, keeping its line breaks."""
    return "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, width) or [""]))


def heat_to_image(heat: torch.Tensor, size: int | tuple[int, int]) -> np.ndarray:
    """(h, w) map → (H, W) float in [0, 1] (size = S or (H, W)), bilinearly upsampled then min-max normalised."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return normalise_map(upsample(heat.detach().float().cpu()[None], hw))[0].numpy()


def draw_panel(ax: Axes, image: np.ndarray, panel: Panel, fontsize: float = 8) -> None:
    """Image (H, W, 3) uint8 with the panel's heat map overlaid through the colour map, stretched to the image."""
    ax.imshow(image, interpolation="bilinear")
    if panel.heat is not None:
        ax.imshow(
            heat_to_image(panel.heat, image.shape[:2]), cmap=CMAP, alpha=ALPHA, vmin=0, vmax=1, interpolation="bilinear"
        )
    ax.set_title(panel.title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def explanation_panels(
    cam: torch.Tensor | None,
    mean_attn: torch.Tensor | None,
    words: list[str],
    word_maps: torch.Tensor | None,
    class_title: str = "CAM",
) -> list[Panel]:
    """Image, CAM, mean attention, then one panel per generated word (word_maps (W, h, w))."""
    panels = [Panel("image")]
    if cam is not None:
        panels.append(Panel(class_title, cam))
    if mean_attn is not None:
        panels.append(Panel("mean attention", mean_attn))
    if word_maps is not None:
        panels += [Panel(f'"{w}"', word_maps[k]) for k, w in enumerate(words)]
    return panels


def image_figure(
    image: np.ndarray,
    panels: list[Panel],
    suptitle: str,
    columns: int = 6,
    inch: float = 1.9,
    colorbar: bool = True,
    footnote: str = "",
    fontsize: float = 8,
) -> Figure:
    """One image explained: its panels on a grid `columns` wide (each keeps the image's aspect ratio), the suptitle
    (class, caption) on top, a colour bar stating the maps' normalisation when any panel has a map, and a
    `footnote` in red below (e.g. predict's warning that the checkpoint was trained on synthetic drawings);
    panel titles at `fontsize` points."""
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    aspect = image.shape[0] / image.shape[1]  # H / W
    bar = colorbar and any(p.heat is not None for p in panels)
    width = int(24 * cols * inch / 1.9)  # characters per title line
    title_h = 0.25 + 0.16 * wrap_lines(suptitle, width).count("\n") if suptitle else 0.0
    title_h += 0.25 + 0.16 * wrap_lines(footnote, width).count("\n") if footnote else 0.0
    fig = Figure(
        figsize=(cols * inch + (1.0 if bar else 0), rows * inch * aspect + 0.3 * rows + title_h), layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, image, panel, fontsize=fontsize)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(wrap_lines(suptitle, width), fontsize=max(9, fontsize))
    if footnote:
        fig.supxlabel(wrap_lines(footnote, width), fontsize=max(9, fontsize), color="firebrick", fontweight="bold")
    if bar:
        add_colorbar(fig, list(axes.flat), fontsize=max(7, fontsize - 3))
    return fig


def overlay(image: np.ndarray, heat: torch.Tensor | None) -> np.ndarray:
    """(H, W, 3) uint8: the image with the map drawn over it as `draw_panel` does (colour map CMAP at ALPHA)."""
    if heat is None:
        return image
    from matplotlib import colormaps

    colours = colormaps[CMAP](heat_to_image(heat, image.shape[:2]))[..., :3] * 255.0  # (H, W, 3)
    return (image * (1 - ALPHA) + colours * ALPHA).round().clip(0, 255).astype(np.uint8)


def mosaic_figure(
    image: np.ndarray, panels: list[Panel], suptitle: str, footnote: str = "", columns: int = 6, dpi: int = 110
) -> Figure:
    """`image_figure`'s content drawn fast: the panels composed into one array (one image, one axes, a title
    text per panel) instead of an axes per panel with a layout engine (~20× faster; predict draws one figure
    per file). Pixel-exact layout: save it without bbox_inches="tight"."""
    h, w = image.shape[:2]
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    gap, label = 8, 18  # pixels between tiles, and for each tile's title
    pitch = max(w, 130) + gap  # a narrow image still leaves its title room: centred in a wider column
    canvas = np.full((rows * (h + label + gap), cols * pitch, 3), 255, dtype=np.uint8)
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        y, x = r * (h + label + gap) + label, c * pitch + (pitch - gap - w) // 2
        canvas[y : y + h, x : x + w] = overlay(image, panel.heat)
    width = max(40, canvas.shape[1] // 7)  # characters per title line at 9 pt
    top_lines = wrap_lines(suptitle, width).count("\n") + 1 if suptitle else 0
    bottom_lines = wrap_lines(footnote, width).count("\n") + 1 if footnote else 0
    top, bottom = 8 + 16 * top_lines, 8 + 16 * bottom_lines
    bar = 70 if any(p.heat is not None for p in panels) else 0
    fig_w, fig_h = canvas.shape[1] + bar + 8, canvas.shape[0] + top + bottom  # pixels
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.figimage(canvas, xo=4, yo=bottom, origin="upper")  # pixels as they are: no resampling
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        x, y = 4 + c * pitch + (pitch - gap) / 2, fig_h - top - r * (h + label + gap) - label + 4  # from the bottom
        fig.text(x / fig_w, y / fig_h, panel.title, ha="center", va="bottom", fontsize=7)
    if suptitle:
        fig.text(0.5, 1 - 4 / fig_h, wrap_lines(suptitle, width), ha="center", va="top", fontsize=9)
    if footnote:
        fig.text(
            0.5,
            4 / fig_h,
            wrap_lines(footnote, width),
            ha="center",
            va="bottom",
            fontsize=9,
            color="firebrick",
            fontweight="bold",
        )
    if bar:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        cax = fig.add_axes(
            ((canvas.shape[1] + 12) / fig_w, bottom / fig_h + 0.05, 10 / fig_w, 0.8 * canvas.shape[0] / fig_h)
        )
        cb = fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), cax=cax)
        cb.set_label(BAR_LABEL, fontsize=7)
        cb.ax.tick_params(labelsize=7)
    return fig


def add_colorbar(fig: Figure, axes: list[Axes], fontsize: float = 7) -> None:
    """One colour bar for every overlay of the figure, labelled with the normalisation."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cb = fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), ax=axes, fraction=0.03, pad=0.015, shrink=0.9, aspect=15)
    cb.set_label(BAR_LABEL, fontsize=fontsize)
    cb.ax.tick_params(labelsize=fontsize)


def grid_figure(images: list[np.ndarray], rows: list[list[Panel]], captions: list[str], inch: float = 1.8) -> Figure:
    """Several images, one row each (image, CAM, attention …), a caption text beside each row, one colour bar."""
    cols = max(len(r) for r in rows)
    fig = Figure(figsize=(cols * inch + 3.8, len(rows) * inch + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols + 1, squeeze=False, gridspec_kw={"width_ratios": [1] * cols + [1.8]})
    for r, (image, panels, text) in enumerate(zip(images, rows, captions, strict=False)):
        for c in range(cols):
            if c < len(panels):
                draw_panel(axes[r, c], image, panels[c], fontsize=7)
            else:
                axes[r, c].axis("off")
        axes[r, cols].axis("off")
        axes[r, cols].text(0, 0.5, wrap_lines(text, 38), fontsize=6.5, va="center", family="monospace")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    if any(p.heat is not None for r in rows for p in r):
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        cb = fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), cax=fig.add_axes((0.945, 0.1, 0.012, 0.8)))
        cb.set_label(BAR_LABEL, fontsize=6.5)
        cb.ax.tick_params(labelsize=6)
    return fig


def figure_array(fig: Figure) -> np.ndarray:
    """The rendered figure as (H, W, 3) uint8."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write the figure in the format its suffix names (png, pdf, svg; none → png), parent folders created."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise ValueError(f"{path}: figure format must be one of {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=fmt, bbox_inches="tight", pad_inches=0.04)
    return path


def figure_bytes(fig: Figure, dpi: int = 90, fmt: str = "png") -> bytes:
    """The figure as PNG or JPEG bytes (for embedding in an HTML page: JPEG is ~5× smaller for photos with overlays)."""
    import io

    if fmt == "png":
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        return buf.getvalue()
    from PIL import Image

    fig.set_dpi(dpi)
    buf = io.BytesIO()
    Image.fromarray(figure_array(fig)).save(buf, format="JPEG", quality=88)
    return buf.getvalue()
