"""One scene mapped radiometrically onto an earlier scene of the same place (IR-MAD).

Post-classification change (a land-cover model predicts each date on its own) reads
a brightness or haze difference between dates as a difference of land cover. The
same relative normalisation as ``geoseg stack --normalize irmad``
(:mod:`geoseg.change.radiometric`: IR-MAD invariant pixels, Nielsen 2007; orthogonal
regression per band, Canty & Nielsen 2008) is applied here to a single-date scene:
its bands are fitted to the same bands of a reference scene (date 1) on the pixels
valid in both, and the scene is predicted in the reference's radiometry.

Only the bands given are fitted (``predict`` gives the model's input bands, so
the invariant pixels can differ from those of ``geoseg stack``, which fits every
band of the dates). The reference must lie on the scene's grid (CRS, transform,
size), as for ``geoseg stack``: pixels are paired by position. The fit, with the
band names, is recorded in the scene's tags (:data:`NORMALIZE_TAG`), which
``predict`` carries into the map; :func:`read_normalization` and
:func:`normalization_text` read it back for reports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import rasterio
from rasterio.transform import array_bounds

from geoseg.change.radiometric import NORMALIZE_METHODS, DateFit, fit_dates, normalized
from geoseg.errors import BandMismatchError, GeosegError
from geoseg.io.band_checks import BandOrigin
from geoseg.io.raster import Scene

__all__ = [
    "NORMALIZE_TAG",
    "check_same_grid",
    "fit_text",
    "map_normalizations",
    "normalization_lines",
    "normalization_text",
    "normalize_to_reference",
    "read_normalization",
]

log = logging.getLogger(__name__)

#: Map tag holding the reference and the fitted gains/offsets (JSON).
NORMALIZE_TAG = "GEOSEG_NORMALIZED_TO"


def check_same_grid(scene: Scene, reference: Scene, what: str = "the reference") -> None:
    """Refuse a scene off ``reference``'s grid, with the ``gdalwarp`` call that aligns it.

    Raises:
        GeosegError: another CRS, transform or size (names both files).
    """

    def grid(s: Scene) -> str:
        x, y = s.transform.c, s.transform.f
        return (
            f"{s.width} x {s.height} px of {abs(s.transform.a):g} from ({x:.12g}, {y:.12g}), "
            f"{s.crs}"
        )

    if (scene.crs, scene.transform, scene.height, scene.width) != (
        reference.crs, reference.transform, reference.height, reference.width,
    ):  # fmt: skip
        left, bottom, right, top = array_bounds(reference.height, reference.width,
                                                reference.transform)  # fmt: skip
        aligned = f"{os.path.splitext(scene.path)[0]}_aligned.tif"
        raise GeosegError(
            f"{scene.path}: not on the grid of {what} {reference.path} ({grid(scene)} vs "
            f"{grid(reference)}); pixels are paired by position, so resample it onto that "
            f"grid first: `gdalwarp -t_srs {reference.crs} -te {left:.12g} {bottom:.12g} "
            f"{right:.12g} {top:.12g} -ts {reference.width} {reference.height} -r bilinear "
            f"{scene.path} {aligned}`"
        )


def _check_pair(scene: Scene, reference: Scene) -> None:
    """Refuse a reference off the scene's grid or with other bands."""
    check_same_grid(scene, reference)
    if scene.band_names != reference.band_names:
        raise BandMismatchError(
            f"{scene.path}: bands {list(scene.band_names)}, the reference {reference.path} "
            f"has {list(reference.band_names)}; normalisation pairs bands by name"
        )


def normalize_to_reference(
    scene: Scene, reference: Scene, method: str = "irmad"
) -> tuple[Scene, DateFit]:
    """``scene`` with its bands mapped onto ``reference``'s radiometry, lazily (float32).

    Args:
        scene: the later date, opened with the bands the model reads.
        reference: the first date, opened with the same bands, on the same grid.
        method: ``"irmad"``.

    Returns:
        The normalised scene (values in the file's units, as float32; nodata kept;
        the fit in its tags under :data:`NORMALIZE_TAG`) and the fit
        (``reference ≈ gain * scene + offset`` per band).

    Raises:
        GeosegError: an unknown method, another grid, other bands, too few invariant
            pixels or bands that do not correlate (see :func:`~.radiometric.fit_dates`).
    """
    if method not in NORMALIZE_METHODS:
        raise GeosegError(f"unknown normalisation {method!r}; the choices are: irmad")
    _check_pair(scene, reference)
    k = scene.count
    data = da.concatenate([reference.data.data, scene.data.data.rechunk(reference.data.chunks)])
    usable = reference.valid & scene.valid.rechunk(reference.valid.chunks)
    for s, part in ((reference, data[:k]), (scene, data[k:])):
        if s.nodata is not None:
            usable = usable & (part != s.nodata).all(axis=0)
    bands = list(range(k))
    source = f"{scene.path} (normalised to {reference.path})"
    origins = [BandOrigin(s.path, n, s.nodata) for s in (reference, scene) for n in s.band_names]
    fit = fit_dates(data, usable, [bands, [k + b for b in bands]], source, bands=origins)[0]
    lazy = normalized(scene.data.data, [bands, bands], [fit], scene.nodata)
    doc = {
        "method": method, "reference": os.path.basename(reference.path),
        "bands": list(scene.band_names), "gains": list(fit.gains), "offsets": list(fit.offsets),
        "correlations": list(fit.correlations), "invariant_share": fit.invariant_share,
        "invariant_pixels": fit.invariant, "sampled_pixels": fit.sampled,
    }  # fmt: skip
    log.info("%s: %s", scene.path, normalization_text(doc))
    tags = {**scene.tags, NORMALIZE_TAG: json.dumps(doc)}
    return dataclasses.replace(scene, data=scene.data.copy(data=lazy), tags=tags), fit


def read_normalization(tags: Mapping[str, str], key: str = NORMALIZE_TAG) -> dict[str, Any] | None:
    """The fit recorded under ``key`` in a map's or scene's tags, or None."""
    raw = tags.get(key)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return {"unreadable": raw}
    return doc if isinstance(doc, dict) else {"unreadable": raw}


def fit_text(
    bands: Sequence[str], gains: Sequence[float], offsets: Sequence[float],
    invariant_share: float, sampled: int | None,
) -> str:  # fmt: skip
    """``"24.3 % of 10,100 sampled px invariant; 2 bands, gain/offset B02 0.7/150, ..."``."""
    of = f" of {sampled:,} sampled px" if sampled else ""
    pairs = ", ".join(f"{b} {g:.4g}/{o:.4g}" for b, g, o in zip(bands, gains, offsets, strict=True))
    return f"{100 * invariant_share:.1f} %{of} invariant; {len(bands)} bands, gain/offset {pairs}"


def normalization_text(doc: Mapping[str, Any]) -> str:
    """One line from a :func:`read_normalization` record (older tags lack band names)."""
    if "unreadable" in doc:
        return f"radiometric normalisation recorded, unreadable: {doc['unreadable']!r}"
    gains = list(doc.get("gains", []))
    bands = doc.get("bands") or [f"band {i}" for i in range(1, len(gains) + 1)]
    fit = fit_text(
        bands, gains, doc.get("offsets", [0.0] * len(gains)),
        float(doc.get("invariant_share", 0.0)), doc.get("sampled_pixels"),
    )  # fmt: skip
    return f"normalised to {doc.get('reference')} ({doc.get('method', 'irmad')}): {fit}"


def map_normalizations(paths: Sequence[str]) -> list[dict[str, Any] | None]:
    """The fit each label map's :data:`NORMALIZE_TAG` records (``predict --normalize-to``,
    a workflow's ``normalize_dates``), None for a map predicted as it was."""
    out = []
    for path in paths:
        with rasterio.open(path) as src:
            out.append(read_normalization(src.tags()))
    return out


def normalization_lines(
    paths: Sequence[str], docs: Sequence[Mapping[str, Any] | None]
) -> list[str]:
    """The report's lines on radiometric normalisation: one per normalised map, or one
    saying that none was."""
    lines = [
        f"radiometric normalisation: map {i} ({os.path.basename(p)}) was predicted "
        f"{normalization_text(d)}"
        for i, (p, d) in enumerate(zip(paths, docs, strict=True), start=1) if d is not None
    ]  # fmt: skip
    return lines or [
        "radiometric normalisation: none recorded in the maps (each date was predicted as it "
        "was; predict --normalize-to or a workflow's normalize_dates: irmad sets it)"
    ]
