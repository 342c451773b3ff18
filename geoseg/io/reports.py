"""Report files: JSON, confusion-matrix CSV and confusion-matrix PNG, each written atomically.

Every writer fills a temporary file in the output's folder and renames it over
the output only when complete, so a failure leaves neither a partial output nor
a temporary behind. An existing output is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from geoseg.errors import GeosegError
from geoseg.io.atomic import atomic_output

__all__ = ["default_font", "write_confusion_csv", "write_confusion_png", "write_json"]

PathLike = str | os.PathLike[str]

#: Header of the first CSV column: rows are reference classes, columns predicted.
CSV_CORNER = "reference\\predicted"

_WHITE = (255, 255, 255)
_DARK_BLUE = (8, 48, 107)
_GRID = (190, 190, 190)
_INK = (0, 0, 0)
_MIN_CELL_PX = 60
_PAD_PX = 8


def _json_default(value: Any) -> Any:
    """Let numpy scalars and arrays through ``json.dump`` as python values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(path: PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON (keys in their given order).

    NaN and infinities are refused (``ValueError``): convert them to None first,
    e.g. with :meth:`geoseg.evaluation.SegmentationMetrics.to_json`.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_output(path, overwrite) as tmp, tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, allow_nan=False, default=_json_default)
        f.write("\n")
    return Path(path)


def _check_matrix(confusion: np.ndarray, names: Sequence[str]) -> np.ndarray:
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape != (len(names), len(names)):
        raise GeosegError(
            f"confusion matrix must be (K, K) with K = {len(names)} class names, got {cm.shape}"
        )
    if not np.issubdtype(cm.dtype, np.integer):
        raise GeosegError(f"confusion matrix must hold integer counts, got {cm.dtype}")
    return cm


def write_confusion_csv(
    path: PathLike, confusion: np.ndarray, names: Sequence[str], overwrite: bool = False
) -> Path:
    """Write a ``(K, K)`` confusion matrix as CSV.

    The header is ``reference\\predicted,<names...>``; then one row per reference
    class: its name, then its counts per predicted class.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        GeosegError: the matrix is not ``(K, K)`` integers with ``K = len(names)``.
    """
    cm = _check_matrix(confusion, names)
    with atomic_output(path, overwrite) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([CSV_CORNER, *names])
        for name, row in zip(names, cm.tolist(), strict=True):
            writer.writerow([name, *row])
    return Path(path)


def write_confusion_png(
    path: PathLike,
    confusion: np.ndarray,
    names: Sequence[str],
    overwrite: bool = False,
    title: str | None = None,
) -> Path:
    """Draw a ``(K, K)`` confusion matrix as a PNG heat map (Pillow only).

    Cells are coloured by their share of the reference row (white = 0 %, dark
    blue = 100 %) and annotated with the pixel count and that row percentage;
    rows are reference classes, columns predicted classes. Cells are at least
    60 px so the default font stays readable at 1x.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        GeosegError: the matrix is not ``(K, K)`` integers with ``K = len(names)``.
    """
    image = _render_confusion(_check_matrix(confusion, names), [str(n) for n in names], title)
    with atomic_output(path, overwrite) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def default_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at 14 px (the bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _text_size(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _cell_text(count: int, row_total: int) -> tuple[str, str, float]:
    """Count label, percentage label and row share (0 for an empty row)."""
    if row_total == 0:
        return f"{count:,}", "-", 0.0
    share = count / row_total
    return f"{count:,}", f"{100 * share:.1f}%", share


def _shade(share: float) -> tuple[int, int, int]:
    r, g, b = (round(w + (d - w) * share) for w, d in zip(_WHITE, _DARK_BLUE, strict=True))
    return r, g, b


def _render_confusion(cm: np.ndarray, names: list[str], title: str | None) -> Image.Image:
    """Lay out title, axis titles, class names and cells; return the RGB image."""
    font = default_font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    totals = cm.sum(axis=1).tolist()
    cells = [[_cell_text(int(c), int(totals[i])) for c in row] for i, row in enumerate(cm)]
    line_h = max(_text_size(probe, "Ag%0", font)[1], 1)
    text_w = max(_text_size(probe, s, font)[0] for row in cells for c in row for s in c[:2])
    cell = max(_MIN_CELL_PX, text_w + 2 * _PAD_PX, 2 * line_h + 3 * _PAD_PX)
    k = len(names)
    name_w = max(_text_size(probe, n, font)[0] for n in names)
    # Column names are written vertically so long names never overlap.
    title_h = line_h + 2 * _PAD_PX if title else 0
    x0 = _PAD_PX + line_h + _PAD_PX + name_w + _PAD_PX
    y0 = _PAD_PX + title_h + line_h + _PAD_PX + name_w + _PAD_PX
    width, height = x0 + k * cell + _PAD_PX, y0 + k * cell + _PAD_PX
    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((width // 2, _PAD_PX), title, fill=_INK, font=font, anchor="ma")
    top_title = (x0 + k * cell // 2, _PAD_PX + title_h)
    draw.text(top_title, "predicted", fill=_INK, font=font, anchor="ma")
    _vertical_text(image, "reference", (_PAD_PX + line_h // 2, y0 + k * cell // 2), font)
    for i, name in enumerate(names):
        mid = i * cell + cell // 2
        draw.text((x0 - _PAD_PX, y0 + mid), name, fill=_INK, font=font, anchor="rm")
        _vertical_text(image, name, (x0 + mid, y0 - _PAD_PX), font, bottom=True)
    for i, row in enumerate(cells):
        for j, (count, percent, share) in enumerate(row):
            left, top = x0 + j * cell, y0 + i * cell
            draw.rectangle([left, top, left + cell, top + cell], fill=_shade(share), outline=_GRID)
            ink = _WHITE if share > 0.5 else _INK
            cx, cy = left + cell // 2, top + cell // 2
            draw.text((cx, cy - 2), count, fill=ink, font=font, anchor="md")
            draw.text((cx, cy + 2), percent, fill=ink, font=font, anchor="ma")
    return image


def _vertical_text(
    image: Image.Image,
    text: str,
    at: tuple[int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    *,
    bottom: bool = False,
) -> None:
    """Paste ``text`` rotated 90° (reading bottom to top), centred on ``at``.

    With ``bottom`` the text ends at ``at[1]`` instead of being centred on it.
    """
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, low = probe.textbbox((0, 0), text, font=font)
    mask = Image.new("L", (int(right - left) + 2, int(low - top) + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, fill=255, font=font)
    mask = mask.rotate(90, expand=True)
    x = at[0] - mask.width // 2
    y = at[1] - (mask.height if bottom else mask.height // 2)
    image.paste(_INK, (x, y, x + mask.width, y + mask.height), mask)
