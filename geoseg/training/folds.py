"""Spatially separate cross-validation folds of the training rasters.

The rule (``geoseg train --folds K``; README "Cross-validation and ensembles"):

- **At least K rasters**: whole rasters are the blocks. They are dealt largest
  first, each to the fold holding the fewest pixels so far (ties: the lower fold),
  so folds are about equally large; separate files are taken to be separate places.
- **Fewer than K rasters**: every raster is cut across its longer side (rows when
  it is at least as tall as wide, else columns) into K strips with edges at
  ``round(i * L / K)``, and fold ``i`` holds out strip ``i`` of every raster. Each
  strip must be at least ``--window`` px across, else there are too many folds.

Fold ``i``'s member trains on everything outside its held-out blocks except a
buffer of ``buffer`` px (the inference margin) along each cut, and is scored on
its held-out blocks, each cut out as a raster of its own: no training window
reads a held-out pixel, and no scoring window (held-out core plus its margin,
reflected at the block's edge) reads a training pixel. The held-out blocks of all
folds cover every pixel exactly once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import ConfigError
from geoseg.io.training_data import LabelledRaster

__all__ = ["Block", "Fold", "crop", "fold_blocks"]


@dataclass(frozen=True)
class Block:
    """A rectangle of one training raster: rows ``[r0, r1)``, columns ``[c0, c1)``."""

    raster: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def pixels(self) -> int:
        """Its area in pixels."""
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])

    def to_json(self, paths: Sequence[str]) -> dict[str, object]:
        """The block as JSON: the raster's path and the row/column ranges (end excluded)."""
        return {"image": paths[self.raster], "rows": list(self.rows), "cols": list(self.cols)}


@dataclass(frozen=True)
class Fold:
    """One fold: the blocks its member is scored on and those it trains on."""

    held: tuple[Block, ...]
    train: tuple[Block, ...]


def crop(array: np.ndarray, block: Block) -> np.ndarray:
    """``array[..., rows, cols]`` of ``block`` (a copy)."""
    (r0, r1), (c0, c1) = block.rows, block.cols
    return np.array(array[..., r0:r1, c0:c1])


def crop_raster(r: LabelledRaster, block: Block) -> LabelledRaster:
    """The part of a labelled raster inside ``block``."""
    return dataclasses.replace(
        r, image=crop(r.image, block), valid=crop(r.valid, block), labels=crop(r.labels, block)
    )


def _whole_rasters(shapes: Sequence[tuple[int, int]], k: int) -> list[Fold]:
    """Whole rasters dealt to ``k`` folds, largest first to the smallest fold so far."""
    blocks = [Block(i, (0, h), (0, w)) for i, (h, w) in enumerate(shapes)]
    held: list[list[Block]] = [[] for _ in range(k)]
    sizes = [0] * k
    for b in sorted(blocks, key=lambda b: (-b.pixels, b.raster)):
        f = int(np.argmin(sizes))
        held[f].append(b)
        sizes[f] += b.pixels
    return [
        Fold(tuple(sorted(h, key=lambda b: b.raster)),
             tuple(b for b in blocks if b not in h))
        for h in held
    ]  # fmt: skip


def _edges(length: int, k: int) -> list[int]:
    return [round(i * length / k) for i in range(k + 1)]


def _strip(i: int, h: int, w: int, a: int, b: int) -> Block:
    """Rows (tall raster) or columns (wide raster) ``[a, b)`` of raster ``i``."""
    return Block(i, (a, b), (0, w)) if h >= w else Block(i, (0, h), (a, b))


def _strips(
    shapes: Sequence[tuple[int, int]], k: int, window: int, buffer: int, names: Sequence[str]
) -> list[Fold]:
    """Every raster cut into ``k`` strips across its longer side; see the module doc."""
    longest = [max(h, w) for h, w in shapes]
    fits = min(length // window for length in longest)
    if fits < k:
        worst = names[longest.index(min(longest))]
        most = max(len(shapes), fits)
        raise ConfigError(
            f"--folds {k}: {worst} is {min(longest)} px along its longer side, too short for "
            f"{k} strips of at least --window {window} px; use --folds {most} or fewer"
            if most >= 2
            else f"--folds {k}: {worst} is {min(longest)} px along its longer side, too short "
            f"for 2 strips of at least --window {window} px; use a smaller --window or more "
            "rasters"
        )
    folds = []
    for f in range(k):
        held, train = [], []
        for i, (h, w) in enumerate(shapes):
            e = _edges(max(h, w), k)
            held.append(_strip(i, h, w, e[f], e[f + 1]))
            for a, b in ((0, e[f] - buffer), (e[f + 1] + buffer, e[k])):
                if b > a:
                    train.append(_strip(i, h, w, a, b))
        folds.append(Fold(tuple(held), tuple(train)))
    return folds


def fold_blocks(
    shapes: Sequence[tuple[int, int]], k: int, window: int, buffer: int, names: Sequence[str]
) -> list[Fold]:
    """The ``k`` folds of rasters of ``shapes`` ``(H, W)`` (see the module doc for the rule).

    Args:
        shapes: each training raster's rows and columns.
        k: number of folds (at least 2).
        window: training window side, px: strips are at least this wide.
        buffer: px left out of training on each side of a cut (the inference margin).
        names: each raster's path, for messages.

    Raises:
        ConfigError: ``k`` below 2, or strips narrower than ``window`` (the message
            says how many folds fit).
    """
    if k < 2:
        raise ConfigError(
            f"--folds {k}: cross-validation needs at least 2 folds; leave --folds out to "
            "train one model on all the data"
        )
    if len(shapes) >= k:
        return _whole_rasters(shapes, k)
    return _strips(shapes, k, window, buffer, names)
