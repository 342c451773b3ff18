"""Horizontal bar chart of the largest class transitions, drawn with Pillow only."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from geoseg.io.reports import default_font

__all__ = ["render_transition_chart"]

_WHITE = (255, 255, 255)
_INK = (0, 0, 0)
_PAD = 10
_BAR_H = 22
_BAR_W = 420


def render_transition_chart(
    labels: Sequence[str],
    values: Sequence[float],
    colours: Sequence[tuple[int, int, int]],
    unit: str = "ha",
    title: str = "Changed area by transition",
    decimals: int = 2,
) -> Image.Image:
    """One bar per transition, longest first; bars scaled to the largest value.

    Args:
        labels: ``(N,)`` bar names, e.g. ``"forest → urban"``.
        values: ``(N,)`` non-negative areas in ``unit``.
        colours: ``(N,)`` RGB bar colours.
        unit: written after each value.
        title: drawn on top.
        decimals: decimals of the values (negative: rounded to tens, hundreds, ...),
            e.g. :func:`geoseg.report.numbers.area_decimals` of the pixel area.

    Returns:
        An RGB image (a one-line note instead of bars when ``values`` is empty).
    """
    font = default_font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [f"{round(v, decimals):,.{max(decimals, 0)}f} {unit}" for v in values]
    name_w = max((int(probe.textlength(s, font=font)) for s in labels), default=0)
    value_w = max((int(probe.textlength(s, font=font)) for s in texts), default=0)
    title_w = int(probe.textlength(title, font=font))
    width = max(3 * _PAD + name_w + _BAR_W + value_w + _PAD, title_w + 2 * _PAD)
    rows = max(len(values), 1)
    height = _PAD * 3 + _BAR_H + rows * (_BAR_H + _PAD // 2)
    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((_PAD, _PAD), title, fill=_INK, font=font)
    top = 2 * _PAD + _BAR_H
    if not values:
        draw.text((_PAD, top), "no change", fill=_INK, font=font)
        return image
    biggest = max(max(values), 1e-300)
    x0 = 2 * _PAD + name_w
    for i, (label, value, colour, text) in enumerate(
        zip(labels, values, colours, texts, strict=True)
    ):
        y = top + i * (_BAR_H + _PAD // 2)
        draw.text((_PAD, y + _BAR_H // 2), label, fill=_INK, font=font, anchor="lm")
        bar = max(1, round(_BAR_W * value / biggest))
        draw.rectangle([x0, y, x0 + bar, y + _BAR_H], fill=tuple(colour), outline=_INK)
        draw.text((x0 + bar + _PAD, y + _BAR_H // 2), text, fill=_INK, font=font, anchor="lm")
    return image
