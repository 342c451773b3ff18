"""The change codes of a report, by either rule, and the classes of ``change.tif``.

``map`` (map differencing): the code of each pixel is ``from * K + to`` of the two
label maps, after the temporal-consistency filter (geoseg.change.temporal).
``posterior``: the posterior rule on the first and last date's class probabilities
(geoseg.change.posterior), consistency on top. Either way the minimum mapping unit
(geoseg.change.mmu) follows. Internally ``K*K`` is nodata and ``K*K + 1``
uncertain; in ``change.tif`` nodata is 255 and uncertain ``K*K``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from geoseg.areas import HECTARE_M2
from geoseg.change.align import AlignedMaps
from geoseg.change.matrix import TransitionMatrix
from geoseg.change.mmu import CHANGE_CONNECTIVITY, mmu_blocks
from geoseg.change.posterior import posterior_code_blocks
from geoseg.change.temporal import persistent_after
from geoseg.change.transitions import TransitionSink, transition_codes
from geoseg.errors import GeosegError
from geoseg.tiling.execute import store_blocks
from geoseg.types import NODATA_LABEL, ClassInfo, ClassSchema

__all__ = [
    "RULES", "UNCERTAIN_COLOUR", "UNCHANGED_GREY", "change_codes", "change_schema",
    "file_codes", "map_difference_matrix", "uncertain_colour",
]  # fmt: skip

#: The rules of ``geoseg change --rule``.
RULES = ("map", "posterior")
#: Colour of unchanged (from == to) pixels in change.tif.
UNCHANGED_GREY = (170, 170, 170)
#: Colours for the posterior rule's uncertain pixels in change.tif, in order of
#: preference; the first far from every class colour is used (:func:`uncertain_colour`).
UNCERTAIN_COLOURS = ((255, 0, 255), (0, 255, 255), (128, 0, 128), (0, 0, 0), (255, 255, 255))
#: The first of :data:`UNCERTAIN_COLOURS` (magenta).
UNCERTAIN_COLOUR = UNCERTAIN_COLOURS[0]
#: Smallest RGB distance from every class colour (and the unchanged grey) an uncertain
#: colour keeps, so a legend never shows it beside a look-alike class.
_MIN_COLOUR_DISTANCE = 100.0


def uncertain_colour(schema: ClassSchema) -> tuple[int, int, int]:
    """The colour of uncertain pixels: the first of :data:`UNCERTAIN_COLOURS` at least
    :data:`_MIN_COLOUR_DISTANCE` from every class colour and :data:`UNCHANGED_GREY`
    (the farthest of them when none is)."""
    taken = [UNCHANGED_GREY, *(c.colour for c in schema.classes)]

    def distance(colour: tuple[int, int, int]) -> float:
        return min(sum((a - b) ** 2 for a, b in zip(colour, t, strict=True)) ** 0.5
                   for t in taken)  # fmt: skip

    for colour in UNCERTAIN_COLOURS:
        if distance(colour) >= _MIN_COLOUR_DISTANCE:
            return colour
    return max(UNCERTAIN_COLOURS, key=distance)


def change_schema(schema: ClassSchema, uncertain: bool = False) -> ClassSchema:
    """Classes of change.tif: code ``i * K + j`` = "from i to j"; unchanged codes grey;
    with ``uncertain`` (posterior rule), code ``K*K`` = uncertain.

    Raises:
        GeosegError: ``K * K`` codes do not fit a uint8 raster beside nodata 255 (K > 15).
    """
    k = len(schema)
    if k * k >= NODATA_LABEL:
        raise GeosegError(
            f"{k} classes give {k * k} transition codes, more than a uint8 change raster holds "
            "(254); merge classes to at most 15 before change detection"
        )
    infos = []
    for i, a in enumerate(schema.classes):
        for j, b in enumerate(schema.classes):
            colour = UNCHANGED_GREY if i == j else b.colour
            infos.append(ClassInfo(i * k + j, f"{a.name} -> {b.name}", colour))
    if uncertain:
        infos.append(ClassInfo(k * k, "uncertain", uncertain_colour(schema)))
    return ClassSchema(tuple(infos))


def file_codes(codes: np.ndarray, k: int) -> np.ndarray:
    """Internal ``(h, w)`` codes -> change.tif's uint8 (nodata 255, uncertain ``K*K``)."""
    out = np.where(codes == k * k, NODATA_LABEL, codes)
    return np.where(codes == k * k + 1, k * k, out).astype(np.uint8)


def _map_codes(aligned: AlignedMaps, consistency: int) -> da.Array:
    """``(1, H, W) int32`` lazy transition codes between the first and the last map."""
    ids = list(aligned.schema.ids)
    before = aligned.labels[0]
    stack = da.stack([lab.rechunk(before.chunks) for lab in aligned.labels]).rechunk({0: -1})

    def block(maps: np.ndarray) -> np.ndarray:
        after = persistent_after(maps, consistency)
        return transition_codes(maps[0], after, ids)[None]

    return da.map_blocks(block, stack, dtype=np.int32, chunks=((1,), *before.chunks))


def change_codes(
    aligned: AlignedMaps, consistency: int, mmu_ha: float | None, scheduler: str,
    workers: int | None, probabilities: tuple[da.Array, da.Array] | None = None,
    min_change_prob: float = 0.7,
) -> da.Array:  # fmt: skip
    """``(1, H, W) uint8`` internal codes: map differencing, or with ``probabilities``
    (first and last date, ``(K, H, W) uint8``) the posterior rule; then the MMU
    (``K*K + 1 <= 226`` fits uint8, a quarter of the bytes a cluster sends the client)."""
    if probabilities is None:
        codes = _map_codes(aligned, consistency)
    else:
        codes = posterior_code_blocks(
            aligned.labels, *probabilities, aligned.schema.ids, min_change_prob, consistency
        )
    if mmu_ha is not None:
        codes = mmu_blocks(
            codes, len(aligned.schema), aligned.crs, aligned.transform, mmu_ha * HECTARE_M2,
            connectivity=CHANGE_CONNECTIVITY, scheduler=scheduler, workers=workers,
        )  # fmt: skip
    return codes.astype(np.uint8)


class _CodeTarget:
    """``target[key] = (1, h, w)`` internal codes are added to a :class:`TransitionSink`."""

    def __init__(self, sink: TransitionSink) -> None:
        self._sink = sink

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        self._sink.add_codes(key[-2], key[-1], np.asarray(block[0], np.int64))


def map_difference_matrix(
    aligned: AlignedMaps, consistency: int, mmu_ha: float | None, scheduler: str,
    workers: int | None,
) -> TransitionMatrix:  # fmt: skip
    """The transition areas map differencing gives with the same filters (one more pass;
    the posterior report shows both figures)."""
    sink = TransitionSink(
        aligned.schema.ids, aligned.crs, aligned.transform, shape=(aligned.height, aligned.width)
    )
    codes = change_codes(aligned, consistency, mmu_ha, scheduler, workers)
    store_blocks(codes, _CodeTarget(sink), scheduler, workers)
    return sink.matrix(aligned.schema.names)
