"""Pictures for people: captioned tiles, ticks and crosses drawn (no font needs the
glyphs), side-by-side sheets and a small rate–agreement plot (used by ``icm demo``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def side_by_side(rows: list[list[np.ndarray]], path: Path, gap: int = 6) -> None:
    from PIL import Image

    heights = [max(p.shape[0] for p in r) for r in rows]
    widths = [sum(p.shape[1] for p in r) + gap * (len(r) - 1) for r in rows]
    canvas = np.full((sum(heights) + gap * (len(rows) - 1), max(widths), 3), 255, dtype=np.uint8)
    y = 0
    for r, h in zip(rows, heights):
        x = 0
        for p in r:
            canvas[y : y + p.shape[0], x : x + p.shape[1]] = p
            x += p.shape[1] + gap
        y += h + gap
    Image.fromarray(canvas).save(path)


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType's scalable default
        return ImageFont.load_default()


def text_block(lines: list[str], width: int, size: int = 13, fill=(255, 255, 255), ink=(0, 0, 0),
                marks: list | None = None) -> np.ndarray:
    """White (``fill``) block ``width`` wide with one text line each; ``marks[i]`` True/False draws
    a ✓ (green) or ✗ (red) before line ``i`` (None: no mark)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    step = size + 5
    im = Image.new("RGB", (width, step * len(lines) + 6), fill)
    pen = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        y = 3 + i * step
        x = 4
        mark = marks[i] if marks else None
        if mark is not None:
            _mark(pen, x, y + 1, size - 2, bool(mark))
            x += size + 2
        pen.text((x, y), line, fill=ink, font=font)
    return np.asarray(im)


def _mark(pen, x: int, y: int, s: int, ok: bool) -> None:
    """A drawn ✓ (green) or ✗ (red), ``s`` pixels square (no font needs the glyph)."""
    if ok:
        pen.line([(x, y + s * 0.55), (x + s * 0.38, y + s), (x + s, y)], fill=(0, 150, 60), width=3)
    else:
        pen.line([(x, y), (x + s, y + s)], fill=(200, 30, 30), width=3)
        pen.line([(x, y + s), (x + s, y)], fill=(200, 30, 30), width=3)


def with_header(img: np.ndarray, lines: list[str], marks: list | None = None) -> np.ndarray:
    """``img`` under a header band (text on white above the picture, never over it)."""
    return np.concatenate([text_block(lines, img.shape[1], marks=marks), img], axis=0)


def enlarge(grey: np.ndarray, scale: int) -> np.ndarray:
    """A greyscale picture as RGB, enlarged ``scale``× (nearest) so a person can see it."""
    return np.repeat(np.repeat(np.repeat(grey[..., None], 3, axis=2), scale, axis=0), scale, axis=1)


def rate_agreement_plot(curves: dict, n: int) -> np.ndarray | None:
    """A small agreement-vs-bpp plot of the measured points (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from PIL import Image

    fig, ax = plt.subplots(figsize=(3.6, 2.7), dpi=100)
    for c, label, style in (("icm", "icm dicm-lite0 (bitstream)", "o-"), ("jpeg420", "JPEG 4:2:0 (pixels)", "s--"),
                            ("hevc", "HEVC 4:4:4 (pixels)", "^--")):
        pts = sorted(curves[c])
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=label, ms=4)
    ax.set_xlabel("bits per pixel (whole file)", fontsize=8)
    ax.set_ylabel("top-1 agreement (%)", fontsize=8)
    ax.set_title(f"{n} held-out crops, same or smaller files", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
