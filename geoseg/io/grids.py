"""One rule for "the same grid": CRS, size and a transform equal to a sliver of a pixel.

Two files written by different tools from one grid often differ in the last bits of
their transforms (a degree pixel of 8.98e-05 stored as ...9 vs ...8e-05, ~3e-19 apart).
Exact comparison would resample such a file for nothing; an absolute tolerance means
nothing across units (1e-9 is a millionth of a 1 mm pixel but 1e-5 of a degree pixel).
The tolerance is therefore relative to the pixel size.
"""

from __future__ import annotations

from typing import Any

from affine import Affine

__all__ = ["GRID_REL_TOL", "same_grid", "same_transform"]

#: Largest difference of any transform coefficient, as a share of the pixel size.
GRID_REL_TOL = 1e-9


def same_transform(a: Affine, b: Affine, rel_tol: float = GRID_REL_TOL) -> bool:
    """True when every coefficient of ``a`` and ``b`` differs by < ``rel_tol`` pixels.

    The pixel size is the smaller of ``|a.a|`` and ``|a.e|`` (CRS units per px).
    """
    pixel = min(abs(a.a), abs(a.e)) or max(abs(a.a), abs(a.e))
    tol = rel_tol * pixel
    return all(abs(x - y) <= tol for x, y in zip(tuple(a)[:6], tuple(b)[:6], strict=True))


def same_grid(
    crs_a: Any, transform_a: Affine, shape_a: tuple[int, int],
    crs_b: Any, transform_b: Affine, shape_b: tuple[int, int],
) -> bool:  # fmt: skip
    """True when CRS, ``(height, width)`` and transform (:func:`same_transform`) agree."""
    return (
        crs_a == crs_b
        and tuple(shape_a) == tuple(shape_b)
        and same_transform(transform_a, transform_b)
    )
