"""What demos and benchmarks hand to people: markdown tables, image grids, line plots, report sections."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["DemoSection", "markdown_table", "save_image_grid", "save_line_plot", "format_number"]


@dataclass
class DemoSection:
    """One package's part of ``runs/demo/REPORT.md``: a title, a markdown body, images and a one-line summary."""

    title: str
    markdown: str
    images: list[Path] = field(default_factory=list)
    summary: str = ""


def format_number(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub-markdown table; ``columns`` defaults to the keys in first-seen order."""
    if not rows:
        raise ValueError("rows must contain at least one row")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "| " + " | ".join(columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(format_number(row.get(c, ""), digits) for c in columns) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def _to_uint8_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"each image must be [C,H,W], [H,W,C] or [H,W], got shape {arr.shape}")
    if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return arr


def save_image_grid(images: Sequence[torch.Tensor | np.ndarray] | torch.Tensor, path: str | os.PathLike,
                    nrow: int = 8, padding: int = 2, scale: int = 1, col_labels: Sequence[str] | None = None,
                    row_labels: Sequence[str] | None = None) -> Path:
    """Tile images (float in [0,1] or uint8; CHW or HWC) into one PNG; ``scale`` enlarges small images.

    ``col_labels`` (one per column) are drawn in a strip above the grid and ``row_labels`` (one per row) in a strip
    to its left, inside the picture, so a grid read on its own still says which panel is which.
    """
    from PIL import Image

    if isinstance(images, torch.Tensor):
        images = list(images)
    if len(images) == 0:
        raise ValueError("images must not be empty")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    tiles = [_to_uint8_hwc(im) for im in images]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    cols = min(nrow, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    img = Image.fromarray(grid)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if col_labels is not None or row_labels is not None:
        img = _draw_labels(img, cols, rows, (h + padding) * scale, (w + padding) * scale, padding * scale,
                           col_labels, row_labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _draw_labels(img, cols: int, rows: int, cell_h: int, cell_w: int, pad: int,
                 col_labels: Sequence[str] | None, row_labels: Sequence[str] | None):
    """``img`` with a header strip of column labels and a left strip of row labels (black text on white)."""
    from PIL import Image, ImageDraw, ImageFont

    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"col_labels must have one label per column ({cols}), got {len(col_labels)}")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must have one label per row ({rows}), got {len(row_labels)}")
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    probe = ImageDraw.Draw(img)

    def size(text: str) -> tuple[int, int]:
        box = probe.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    top = (max(size(t)[1] for t in col_labels) + 6) if col_labels else 0
    left = (max(size(t)[0] for t in row_labels) + 8) if row_labels else 0
    canvas = Image.new("RGB", (img.width + left, img.height + top), (255, 255, 255))
    canvas.paste(img, (left, top))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(col_labels or []):
        tw, _ = size(text)
        x = left + pad + c * cell_w + max(0, (cell_w - pad - tw) // 2)
        draw.text((x, 2), text, fill=(0, 0, 0), font=font)
    for r, text in enumerate(row_labels or []):
        _, th = size(text)
        y = top + pad + r * cell_h + max(0, (cell_h - pad - th) // 2)
        draw.text((3, y), text, fill=(0, 0, 0), font=font)
    return canvas


def save_line_plot(path: str | os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                   xlabel: str = "", ylabel: str = "", title: str = "") -> Path:
    """Plot named ``(xs, ys)`` series into a PNG (matplotlib, Agg backend)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'paperlab-commons[plot]'") from None
    if not series:
        raise ValueError("series must contain at least one named (xs, ys) pair")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r}: xs and ys differ in length ({len(xs)} vs {len(ys)})")
        ax.plot(list(xs), list(ys), marker="o", label=name)
    if all(float(x).is_integer() for xs, _ in series.values() for x in xs):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
