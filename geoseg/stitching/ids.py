"""Scene-unique instance ids from small per-chunk tables (no pass over pixels).

Each chunk reports a :class:`ChunkTable`: the fragment key and class of each of
its local ids, and the merge edges it found between fragments. On the client the
edges join fragments into objects (connected components); every object with at
least one pixel gets an id ``1..n``, numbered in the order of its smallest
fragment key, so ids do not depend on the chunking either. The result is one
lookup table per chunk, applied block by block with :meth:`InstanceIds.relabel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.errors import GeosegError
from geoseg.types import NODATA_LABEL

__all__ = ["ChunkTable", "InstanceIds", "resolve_ids"]


@dataclass(frozen=True, eq=False)
class ChunkTable:
    """What one chunk tells the client.

    Attributes:
        origin: ``(row, col)`` of the chunk's top-left pixel in the scene.
        keys: ``(n,) uint64`` fragment key of local id ``i + 1``.
        classes: ``(n,) int64`` class of local id ``i + 1``.
        edges: ``(e, 2) uint64`` keys of fragments that are one object.
        scores: ``(n,) float32`` detection score of local id ``i + 1`` (None: 0).
    """

    origin: tuple[int, int]
    keys: np.ndarray
    classes: np.ndarray
    edges: np.ndarray
    scores: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class InstanceIds:
    """Per-chunk lookup tables from local ids to scene ids and classes.

    Attributes:
        count: number of instances in the scene (ids are ``1..count``).
        classes: ``(count + 1,) uint8`` class of each scene id; ``[0] = 255``.
        luts: chunk origin -> ``(n + 1,) uint32`` scene id of each local id.
        scores: ``(count + 1,) float32`` score of each scene id: the highest of its
            fragments' detection scores; ``[0] = 0``.
    """

    count: int
    classes: np.ndarray
    luts: dict[tuple[int, int], np.ndarray]
    scores: np.ndarray | None = None

    def relabel(self, origin: tuple[int, int], local: np.ndarray) -> np.ndarray:
        """``(2, h, w) uint32``: scene ids (0 = none) and classes (255 = none) of a block."""
        ids = self.luts[origin][local]
        return np.stack([ids, self.classes[ids].astype(np.uint32)])


def resolve_ids(tables: Iterable[ChunkTable]) -> InstanceIds:
    """Join fragments across seams and number the objects of the whole scene."""
    tables = list(tables)
    present = _concat([t.keys for t in tables], (0,))
    edges = _concat([t.edges for t in tables], (0, 2))
    keys = np.unique(np.concatenate([present, edges.ravel()]))
    if not len(keys):
        empty = np.zeros(1, dtype=np.uint32)
        return InstanceIds(
            0, np.full(1, NODATA_LABEL, np.uint8), {t.origin: empty for t in tables},
            np.zeros(1, np.float32),
        )  # fmt: skip
    a, b = np.searchsorted(keys, edges[:, 0]), np.searchsorted(keys, edges[:, 1])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(len(keys),) * 2)
    _, component = connected_components(graph, directed=False)
    # Number objects in the order of their smallest present key: keys are sorted,
    # so that is the order in which components first appear among present keys.
    comp_present = component[np.searchsorted(keys, np.unique(present))]
    _, first = np.unique(comp_present, return_index=True)
    numbered = comp_present[np.sort(first)]
    rank = np.zeros(len(keys), dtype=np.uint32)
    rank[numbered] = np.arange(1, len(numbered) + 1, dtype=np.uint32)
    scene_id = rank[component]
    classes = np.full(len(numbered) + 1, NODATA_LABEL, dtype=np.uint8)
    scores = np.zeros(len(numbered) + 1, dtype=np.float32)
    luts = {}
    for t in tables:
        ids = scene_id[np.searchsorted(keys, t.keys)]
        _check_classes(classes, ids, t.classes)
        classes[ids] = t.classes
        if t.scores is not None:
            np.maximum.at(scores, ids, t.scores.astype(np.float32))
        luts[t.origin] = np.concatenate([[0], ids]).astype(np.uint32)
    return InstanceIds(len(numbered), classes, luts, scores)


def _check_classes(classes: np.ndarray, ids: np.ndarray, new: np.ndarray) -> None:
    old = classes[ids]
    clash = (old != NODATA_LABEL) & (old != new)
    if clash.any():  # merge_edges joins only fragments of one class
        raise GeosegError(f"instance {int(ids[clash][0])} has two classes; this is a bug")


def _concat(parts: Sequence[np.ndarray], empty: tuple[int, ...]) -> np.ndarray:
    parts = [p for p in parts if p.size]
    return np.concatenate(parts).astype(np.uint64) if parts else np.zeros(empty, np.uint64)
