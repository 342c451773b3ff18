"""A synthetic scene of known objects and an oracle that reports them per window.

The scene carries its own truth: band 0 is the object id (0 = background), band 1
the object's class. The oracle emits, for each window, the masks of the objects
visible in that window (clipped to it) with score 1.0, so tests measure the
stitching, not a model.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage

from geoseg.stitching import InstanceIds, plan_chunks, relabel_blocks, stitch_instances
from geoseg.stitching.protocol import WindowInstances
from geoseg.types import ClassInfo, ClassSchema, TileSpec

THING_SCHEMA = ClassSchema(
    (
        ClassInfo(0, "ground", (90, 90, 90)),
        ClassInfo(2, "building", (200, 0, 0), is_thing=True),
        ClassInfo(5, "tree", (0, 150, 0), is_thing=True),
    )
)


class OraclePredictor:
    """Reads the truth out of bands 0 (object id) and 1 (class) of each window."""

    schema = THING_SCHEMA
    bands = ("object", "class")

    def __init__(self) -> None:
        self.windows = 0

    def predict_instances(self, batch: np.ndarray, valid: np.ndarray) -> list[WindowInstances]:
        out = []
        for x, v in zip(batch, valid, strict=True):
            self.windows += 1
            obj = np.where(v, x[0], 0).astype(np.int64)
            ids = np.unique(obj[obj > 0])
            masks = obj[None] == ids[:, None, None]
            classes = np.array([int(x[1][m][0]) for m in masks], dtype=np.int64)
            out.append((masks, classes, np.ones(len(ids), np.float32)))
        return out


def object_scene(
    height: int, width: int, seed: int = 0, big: bool = True, touching: int = 0
) -> np.ndarray:
    """``(2, H, W) float32``: object ids 1..n (discs and rectangles, 2 px apart) and classes.

    ``touching``: a seam stride in px (0 = none); adds three pairs of same-class
    rectangles in contact: one pair straddles the vertical seam at ``2 x touching``,
    one touches along the vertical seam at ``4 x touching`` and one along the
    horizontal seam at ``2 x touching``, so stitching must keep objects apart that
    only their ids separate.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((height, width), np.int32)
    yy, xx = np.mgrid[:height, :width]
    shapes: list[tuple[object, ...]] = []
    if big:  # larger than a window: seen only in pieces
        shapes += [("rect", height // 3, width // 4, 14, 75), ("disc", height // 2, width // 2, 24)]
    if touching:
        s = touching  # (row0, row1, col0, col1) of each half, end exclusive
        shapes += [
            ("pair", (s // 3, s // 3 + 10, 2 * s - 6, 2 * s + 6), (s // 3 + 10, s // 3 + 20)),
            ("pair", (height - 40, height - 26, 4 * s - 8, 4 * s), (4 * s, 4 * s + 8)),
            ("pair", (2 * s - 8, 2 * s, width - 40, width - 30), (2 * s, 2 * s + 8)),
        ]
    shapes += [
        ("disc", rng.integers(height), rng.integers(width), rng.integers(2, 9))
        if rng.random() < 0.5
        else ("rect", rng.integers(height), rng.integers(width), *rng.integers(2, 16, size=2))
        for _ in range(120)
    ]
    n, same_class = 0, []
    for kind, *args in shapes:
        masks = _shape_masks(str(kind), args, yy, xx)
        whole = np.logical_or.reduce(masks)
        if whole.any() and not (ndimage.binary_dilation(whole, iterations=2) & (ids > 0)).any():
            for mask in masks:
                n += 1
                ids[mask] = n
            if len(masks) > 1:
                same_class += list(range(n - len(masks) + 1, n + 1))
    classes = np.where(ids > 0, np.where(ids % 2 == 0, 2, 5), 0)
    classes[np.isin(ids, same_class)] = 2
    return np.stack([ids, classes]).astype(np.float32)


def _shape_masks(kind: str, args: list[object], yy: np.ndarray, xx: np.ndarray) -> list[np.ndarray]:
    """The masks of one shape (a disc or rectangle) or of the two halves of a pair."""
    if kind == "pair":
        (r0, r1, c0, c1), second = args  # type: ignore[misc]
        # the second half shares the first's columns (rows given) or rows (columns given)
        r2, r3, c2, c3 = (*second, c0, c1) if second[0] == r1 else (r0, r1, *second)
        return [
            (yy >= r0) & (yy < r1) & (xx >= c0) & (xx < c1),
            (yy >= r2) & (yy < r3) & (xx >= c2) & (xx < c3),
        ]
    cy, cx, *size = args
    if kind == "disc":
        return [(yy - cy) ** 2 + (xx - cx) ** 2 <= size[0] ** 2]  # type: ignore[operator]
    return [(abs(yy - cy) <= size[0] // 2) & (abs(xx - cx) <= size[1] // 2)]  # type: ignore[operator]


def stitch_in_memory(
    scene: np.ndarray,
    spec: TileSpec,
    valid: np.ndarray | None = None,
    scheduler: str = "threads",
    workers: int | None = None,
) -> tuple[np.ndarray, InstanceIds]:
    """``(2, H, W) uint32`` scene ids and classes of ``scene`` stitched by the oracle."""
    _, h, w = scene.shape
    valid = np.ones((h, w), bool) if valid is None else valid
    oracle = OraclePredictor()
    stage = np.zeros((h, w), np.uint32)
    ids = stitch_instances(
        da.from_array(scene, chunks=(2, 64, 64)), da.from_array(valid, chunks=64),
        lambda: oracle, spec, stage, scheduler=scheduler, workers=workers,
    )  # fmt: skip
    out = np.zeros((2, h, w), np.uint32)
    relabel_blocks(plan_chunks(h, w, spec), lambda key: stage[key], ids, out)
    return out, ids
