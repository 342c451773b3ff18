"""Class-balanced random windows and augmentation for training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import GeosegError
from geoseg.types import NODATA_LABEL

__all__ = ["Batch", "WindowSampler", "augment"]


@dataclass(frozen=True)
class Batch:
    """A training batch.

    Attributes:
        image: ``(B, C, W, W) float32`` band values as stored.
        valid: ``(B, W, W) bool``.
        target: ``(B, W, W) int64`` class index (0..K-1), 255 = ignore.
        ids: ``(B, W, W) int64`` instance ids (0 = none), or None when the sampler
            was given no ids.
    """

    image: np.ndarray
    valid: np.ndarray
    target: np.ndarray
    ids: np.ndarray | None = None


def _pad_to(x: np.ndarray, size: int, mode: str, value: int = 0) -> np.ndarray:
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, max(0, size - h)), (0, max(0, size - w))]
    if mode == "constant":
        return np.pad(x, pad, mode="constant", constant_values=value)
    return np.pad(x, pad, mode="symmetric")


class WindowSampler:
    """Draws windows centred near a pixel of a uniformly chosen class.

    Class-balanced: each window starts from a random pixel of a class drawn
    uniformly among the classes present, so rare classes are seen as often as
    common ones. Windows with less than ``min_labelled`` labelled pixels are redrawn.

    Args:
        images: ``(C, H, W) float32`` per raster.
        valid: ``(H, W) bool`` per raster.
        targets: ``(H, W)`` class index per raster (0..K-1, 255 = ignore).
        window: window side in px (rasters smaller than that are padded).
        rng: the random generator (seeded by the caller).
        min_labelled: minimum labelled fraction of a window.
        ids: ``(H, W)`` instance ids per raster (0 = none), cut along with the
            targets into :attr:`Batch.ids`; None: no ids.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        valid: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        window: int,
        rng: np.random.Generator,
        min_labelled: float = 0.1,
        ids: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.window, self.rng, self.min_labelled = window, rng, min_labelled
        self.images = [_pad_to(x, window, "symmetric") for x in images]
        self.valid = [_pad_to(v, window, "constant", 0) for v in valid]
        self.targets = [
            _pad_to(np.where(v, t, NODATA_LABEL), window, "constant", NODATA_LABEL)
            for t, v in zip(targets, valid, strict=True)
        ]
        self.ids = None if ids is None else [_pad_to(i, window, "constant", 0) for i in ids]
        self.pixels: dict[int, list[tuple[int, np.ndarray]]] = {}
        for r, t in enumerate(self.targets):
            for c in np.unique(t[t != NODATA_LABEL]):
                self.pixels.setdefault(int(c), []).append((r, np.flatnonzero(t == c)))
        if not self.pixels:
            raise GeosegError("the label rasters hold no pixel of any class in the schema")
        self.classes = sorted(self.pixels)

    def _one(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        w, rng = self.window, self.rng
        for _ in range(20):
            c = self.classes[rng.integers(len(self.classes))]
            sizes = np.array([p.size for _, p in self.pixels[c]], np.float64)
            r, flat = self.pixels[c][rng.choice(len(sizes), p=sizes / sizes.sum())]
            h, wd = self.targets[r].shape
            y, x = divmod(int(flat[rng.integers(flat.size)]), wd)
            y0 = int(np.clip(y - rng.integers(w), 0, h - w))
            x0 = int(np.clip(x - rng.integers(w), 0, wd - w))
            t = self.targets[r][y0 : y0 + w, x0 : x0 + w]
            if (t != NODATA_LABEL).mean() >= self.min_labelled:
                break
        img = self.images[r][:, y0 : y0 + w, x0 : x0 + w]
        ids = None if self.ids is None else self.ids[r][y0 : y0 + w, x0 : x0 + w]
        return img, self.valid[r][y0 : y0 + w, x0 : x0 + w], t, ids

    def sample(self, batch_size: int) -> Batch:
        """A batch of ``batch_size`` windows (copies)."""
        parts = [self._one() for _ in range(batch_size)]
        ids = [p[3] for p in parts if p[3] is not None]
        return Batch(
            np.stack([p[0] for p in parts]).astype(np.float32),
            np.stack([p[1] for p in parts]),
            np.stack([p[2] for p in parts]).astype(np.int64),
            np.stack(ids).astype(np.int64) if ids else None,
        )


def augment(batch: Batch, rng: np.random.Generator, jitter: float = 0.1) -> Batch:
    """Random rot90/flips per window and per-band multiplicative brightness jitter.

    Instance ids, when the batch has them, turn with their window (the draws from
    ``rng`` are the same with and without ids).

    Args:
        batch: the windows.
        rng: random generator.
        jitter: band gains are drawn from ``U(1 - jitter, 1 + jitter)``.
    """
    ids = batch.target if batch.ids is None else batch.ids  # stand-in: dropped below
    imgs, valids, targets, turned = [], [], [], []
    for x, v, t, i in zip(batch.image, batch.valid, batch.target, ids, strict=True):
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x, v, t, i = (np.rot90(a, k, axes=(-2, -1)) for a in (x, v, t, i))
        if flip:
            x, v, t, i = (a[..., ::-1] for a in (x, v, t, i))
        gain = rng.uniform(1 - jitter, 1 + jitter, size=(x.shape[0], 1, 1)).astype(np.float32)
        imgs.append(x * gain)
        valids.append(v)
        targets.append(t)
        turned.append(i)
    return Batch(
        np.ascontiguousarray(np.stack(imgs)),
        np.ascontiguousarray(np.stack(valids)),
        np.ascontiguousarray(np.stack(targets)),
        None if batch.ids is None else np.ascontiguousarray(np.stack(turned)),
    )
