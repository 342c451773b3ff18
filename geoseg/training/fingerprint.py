"""Data and device fingerprints for ``geoseg plan`` (nnU-Net-style self-configuration).

The data fingerprint is computed on a bounded sample of windows of each training
scene (:data:`SAMPLE_WINDOW` px square, at most :data:`MAX_WINDOWS` of them in all),
so a 40 000 px scene costs no more than a chip. The rules that turn fingerprints
into a plan are in :mod:`geoseg.training.plan`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from geoseg.areas import pixel_size_m
from geoseg.errors import InvalidRasterError
from geoseg.io.grids import same_grid
from geoseg.io.labels import refuse_probability_raster
from geoseg.io.raster import open_scene
from geoseg.io.training_data import LABEL_NODATA, read_labels_on_grid, refuse_polygon_labels
from geoseg.models.bands import reflectance_scale
from geoseg.types import NODATA_LABEL, ClassSchema

__all__ = [
    "BandStats", "DataFingerprint", "DeviceFingerprint", "ObjectSizes", "band_stats",
    "data_fingerprint", "device_fingerprint", "object_sizes",
]  # fmt: skip

#: Side of a sampled window, px: large enough that most objects are not cut by its edge.
SAMPLE_WINDOW = 512
#: Most windows read over all scenes (16 M px at most, ~64 MB for a 4-band float scene).
MAX_WINDOWS = 64
#: Percentiles kept per band.
PERCENTILES = (0.1, 0.5, 25.0, 50.0, 75.0, 99.5, 99.9)


@dataclass(frozen=True)
class BandStats:
    """One band's statistics over the sampled valid pixels, in model units (scaled).

    Attributes:
        name: band name.
        mean, std: moments.
        percentiles: value at each of :data:`PERCENTILES`.
    """

    name: str
    mean: float
    std: float
    percentiles: tuple[float, ...]

    def pct(self, q: float) -> float:
        """The value at percentile ``q`` (one of :data:`PERCENTILES`)."""
        return self.percentiles[PERCENTILES.index(q)]

    @property
    def tail_ratio(self) -> float:
        """Farther 0.1/99.9 percentile from the median, in interquartile ranges.

        A normal band gives 2.3 (3.09 sigma / 1.35 sigma); a log-normal or
        saturated-highlight band gives well over 6 (heavy-tailed).
        """
        iqr = max(self.pct(75.0) - self.pct(25.0), 1e-12 * max(1.0, abs(self.pct(50.0))))
        spread = max(self.pct(99.9) - self.pct(50.0), self.pct(50.0) - self.pct(0.1))
        return float(spread / iqr)


@dataclass(frozen=True)
class ObjectSizes:
    """Sizes of one class's objects (connected components or instances), in px.

    Attributes:
        count: objects seen in the sample.
        median_px, p90_px: median and 90th percentile of their areas.
        pixel_median_px: area of the object a typical pixel of the class lies in (the
            area-weighted median): a lake among a thousand specks of water is large
            here, while its p90 by count is a speck.
    """

    count: int
    median_px: float
    p90_px: float
    pixel_median_px: float = 0.0

    @property
    def large_diameter_px(self) -> float:
        """Side of a square of a large object's area (the larger of the p90 by count and
        the pixel-weighted median), px."""
        return float(np.sqrt(max(self.p90_px, self.pixel_median_px)))


def _sizes(areas: Sequence[int]) -> ObjectSizes:
    """:class:`ObjectSizes` of object areas in px (at least one)."""
    a = np.sort(np.asarray(areas, np.float64))
    weighted = float(a[np.searchsorted(np.cumsum(a), a.sum() / 2)])
    return ObjectSizes(a.size, float(np.median(a)), float(np.percentile(a, 90)), weighted)


@dataclass(frozen=True)
class DataFingerprint:
    """What ``geoseg plan`` knows of the training data.

    Attributes:
        gsd_m: ground sample distance of the first scene, m (geodesic for geographic CRS).
        dtype: storage type of the images.
        scale: stored value -> model units (:func:`geoseg.models.bands.reflectance_scale`).
        bands: per-band statistics in model units.
        class_px: labelled pixels per class id in the sample.
        objects: object sizes per class id.
        scene_shapes: ``(H, W)`` of each scene, px.
        nodata_share: share of sampled pixels with no image data.
        sampled_px: pixels sampled.
    """

    gsd_m: float
    dtype: str
    scale: float
    bands: tuple[BandStats, ...]
    class_px: Mapping[int, int]
    objects: Mapping[int, ObjectSizes]
    scene_shapes: tuple[tuple[int, int], ...]
    nodata_share: float
    sampled_px: int

    @property
    def class_share(self) -> dict[int, float]:
        """Share of the labelled pixels per class id."""
        total = sum(self.class_px.values()) or 1
        return {c: n / total for c, n in self.class_px.items()}


@dataclass(frozen=True)
class DeviceFingerprint:
    """The machine that will train: CPU cores and RAM, GPU memory when CUDA is present."""

    cpu_cores: int
    ram_gb: float
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None


def device_fingerprint(device: str = "auto") -> DeviceFingerprint:
    """Cores (this process may use), total RAM and, unless ``device="cpu"``, GPU memory."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceFingerprint(cores or 1, ram, props.name, props.total_memory / 2**30)
    return DeviceFingerprint(cores or 1, ram)


def band_stats(names: Sequence[str], pixels: np.ndarray) -> tuple[BandStats, ...]:
    """Statistics of ``(C, N) float`` valid pixels in model units, one per band."""
    pct = np.percentile(pixels, PERCENTILES, axis=1) if pixels.shape[1] else None
    return tuple(
        BandStats(
            name, float(pixels[i].mean()) if pixels.shape[1] else 0.0,
            float(pixels[i].std()) if pixels.shape[1] else 0.0,
            tuple(float(v) for v in pct[:, i]) if pct is not None else (0.0,) * len(PERCENTILES),
        )
        for i, name in enumerate(names)
    )  # fmt: skip


def object_sizes(labels: np.ndarray, ids: np.ndarray | None = None) -> dict[int, list[int]]:
    """Areas in px of each class's objects in one ``(H, W)`` label window.

    Objects are the 8-connected components of each class or, given ``ids``
    (``(H, W)`` instance ids, 0 = none), the instances (each counted under its
    most common class). Unlabelled values (255, :data:`LABEL_NODATA`) are no class.
    """
    out: dict[int, list[int]] = {}
    if ids is not None:
        for i in np.unique(ids[ids > 0]):
            values, counts = np.unique(labels[ids == i], return_counts=True)
            out.setdefault(int(values[np.argmax(counts)]), []).append(int(counts.sum()))
        return out
    eight = np.ones((3, 3), bool)
    for c in np.unique(labels):
        if c in (NODATA_LABEL, LABEL_NODATA):
            continue
        parts, n = ndimage.label(labels == c, structure=eight)
        out[int(c)] = [int(v) for v in np.bincount(parts.ravel())[1 : n + 1]]
    return out


def _windows(shape: tuple[int, int], count: int, rng: np.random.Generator) -> list[Window]:
    """Up to ``count`` of the :data:`SAMPLE_WINDOW` tiles that cover ``shape`` (edge tiles
    smaller), picked at random; all of them for a scene of ``count`` tiles or fewer."""
    h, w = shape
    side = SAMPLE_WINDOW
    tiles = [Window(x, y, min(side, w - x), min(side, h - y))
             for y in range(0, h, side) for x in range(0, w, side)]  # fmt: skip
    picks = rng.choice(len(tiles), size=min(count, len(tiles)), replace=False)
    return [tiles[k] for k in sorted(picks)]


def _label_reader(label_path: str, image_path: str) -> Callable[[Window], np.ndarray]:
    """Reads ``(h, w) int64`` labels on the image grid in a window.

    A label raster on the image's grid is read window by window; one off it is
    aligned in memory once (and refused when it lies off the image), as training does.
    """
    with rasterio.open(image_path) as img, rasterio.open(label_path) as lab:
        on_grid = same_grid(lab.crs, lab.transform, lab.shape, img.crs, img.transform, img.shape)
    if not on_grid:
        full = read_labels_on_grid(label_path, image_path)
        return lambda w: full[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]

    def read(win: Window) -> np.ndarray:
        with rasterio.open(label_path) as lab:
            raw = lab.read(1, window=win, masked=True)
        return np.where(np.ma.getmaskarray(raw), LABEL_NODATA, raw.data.astype(np.int64))

    return read


def _instance_reader(
    label_path: str, image_path: str, schema: ClassSchema, class_field: str | None,
    labels_crs: str | None,
) -> tuple[Callable[[Window], np.ndarray], dict[int, list[int]]]:  # fmt: skip
    """A class-label window reader and every instance's size, from an id raster or polygons.

    The ids are rasterized on the whole image grid once (training holds them in memory
    too, and polygons cannot be read by window); sizes come from the whole scene, so an
    object is never cut by a sampled window's edge.
    """
    from geoseg.training.instances import read_instance_ids

    ids, id_class, labelled = read_instance_ids(
        label_path, image_path, schema, class_field, labels_crs
    )
    background = next(c.id for c in schema.classes if not c.is_thing)
    lut = np.full(max([int(ids.max()), *id_class]) + 1, background, np.int64)
    for i, c in id_class.items():
        lut[i] = c
    labels = np.where(labelled, lut[ids], LABEL_NODATA)

    def read(w: Window) -> np.ndarray:
        return labels[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]

    return read, object_sizes(labels, ids)


def _pair_reader(
    image_path: str, label_path: str, schema: ClassSchema | None, task: str,
    class_field: str | None, labels_crs: str | None,
) -> tuple[Callable[[Window], np.ndarray], dict[int, list[int]] | None]:  # fmt: skip
    """A label window reader of one training pair, and its instances' sizes (instance tasks;
    None: objects are the connected components of each class, counted per window)."""
    if task in ("instance", "panoptic") and schema is not None:
        return _instance_reader(label_path, image_path, schema, class_field, labels_crs)
    refuse_polygon_labels(label_path, f"--task {task} training", image_path)
    # the header checks of any input (a CRS, north-up); a probability raster is not labels
    refuse_probability_raster(label_path, open_scene(label_path).tags)
    return _label_reader(label_path, image_path), None


@dataclass
class _Tally:
    """Running sums of the sampled windows."""

    pixels: list[np.ndarray]
    class_px: dict[int, int]
    sizes: dict[int, list[int]]
    nodata: int = 0
    total: int = 0

    def add(self, image: np.ndarray, valid: np.ndarray, labels: np.ndarray,
            components: bool) -> None:  # fmt: skip
        """One window; ``components``: count each class's connected components as objects."""
        self.pixels.append(image[:, valid])
        self.nodata += int((~valid).sum())
        self.total += valid.size
        labels = np.where(valid, labels, LABEL_NODATA)
        known = (labels != LABEL_NODATA) & (labels != NODATA_LABEL)
        values, counts = np.unique(labels[known], return_counts=True)
        for v, n in zip(values, counts, strict=True):
            self.class_px[int(v)] = self.class_px.get(int(v), 0) + int(n)
        if components:
            self.add_objects(object_sizes(labels))

    def add_objects(self, sizes: Mapping[int, list[int]]) -> None:
        for c, found in sizes.items():
            self.sizes.setdefault(c, []).extend(found)


def data_fingerprint(
    images: Sequence[str], labels: Sequence[str], bands: Sequence[str] | None = None,
    schema: ClassSchema | None = None, task: str = "semantic", class_field: str | None = None,
    labels_crs: str | None = None, seed: int = 0,
) -> DataFingerprint:  # fmt: skip
    """Fingerprint of training pairs (image, labels) on a bounded sample of windows.

    Args:
        images, labels: the training pairs (paths), as for ``geoseg train``.
        bands: band selection (numbers or names); None = all.
        schema: the classes; needed for ``task`` instance/panoptic (id rasters or polygons).
        task: ``semantic``/``change``: objects are connected components of each class;
            ``instance``/``panoptic``: the labelled instances.
        class_field, labels_crs: polygon labels, as for ``geoseg train``.
        seed: picks the sampled windows.

    Raises:
        InvalidRasterError: no CRS, labels off the image, no label in any scene, no
            object in any scene (``task`` instance/panoptic).
    """
    rng = np.random.default_rng(seed)
    tally, shapes = _Tally([], {}, {}), []
    per_scene = max(1, MAX_WINDOWS // len(images))
    first = open_scene(images[0], bands)
    for image_path, label_path in zip(images, labels, strict=True):
        scene = open_scene(image_path, bands)
        shapes.append((int(scene.data.shape[1]), int(scene.data.shape[2])))
        read, objects = _pair_reader(image_path, label_path, schema, task, class_field,
                                     labels_crs)  # fmt: skip
        tally.add_objects(objects or {})
        for win in _windows(shapes[-1], per_scene, rng):
            ys = slice(win.row_off, win.row_off + win.height)
            xs = slice(win.col_off, win.col_off + win.width)
            image = np.asarray(scene.data.data[:, ys, xs].compute(scheduler="sync"), np.float64)
            valid = np.asarray(scene.valid[ys, xs].compute(scheduler="sync"))
            tally.add(image, valid, read(win), components=objects is None)
    if schema is not None:  # values outside the schema are not trained on (training warns)
        tally.class_px = {c: n for c, n in tally.class_px.items() if c in schema.ids}
        tally.sizes = {c: s for c, s in tally.sizes.items() if c in schema.ids}
    if task in ("instance", "panoptic") and not any(tally.sizes.values()):
        raise InvalidRasterError(
            f"{', '.join(labels)}: no labelled object (polygon or instance id) on the images "
            f"{', '.join(images)}; nothing to learn from. Check that the labels hold polygons "
            "over the images' area (same place; polygons in another CRS: --labels-crs), or "
            "pass labels that do"
        )
    return _summarize(tally, first, shapes, images, labels)


def _summarize(
    tally: _Tally, first: Any, shapes: list[tuple[int, int]], images: Sequence[str],
    labels: Sequence[str],
) -> DataFingerprint:  # fmt: skip
    if not tally.class_px:
        raise InvalidRasterError(
            f"{', '.join(labels)}: no labelled pixel on the images {', '.join(images)}; "
            "label some pixels (values other than the nodata value) on the image's area"
        )
    dtype = np.dtype(first.data.dtype)
    scale = reflectance_scale(dtype, first.path)
    pixels = np.concatenate(tally.pixels, axis=1) * scale
    objects = {
        c: _sizes(s) for c, s in sorted(tally.sizes.items()) if s
    }  # fmt: skip
    gsd = pixel_size_m(first.crs, first.transform, shapes[0])
    return DataFingerprint(
        gsd_m=gsd, dtype=str(dtype), scale=scale, bands=band_stats(first.band_names, pixels),
        class_px=dict(sorted(tally.class_px.items())), objects=objects,
        scene_shapes=tuple(shapes), nodata_share=tally.nodata / max(tally.total, 1),
        sampled_px=tally.total,
    )  # fmt: skip
