"""One scene mapped radiometrically onto an earlier scene of the same place (IR-MAD).

Post-classification change (a land-cover model predicts each date on its own) reads
a brightness or haze difference between dates as a difference of land cover. The
same relative normalisation as ``geoseg stack --normalize irmad``
(:mod:`geoseg.change.radiometric`: IR-MAD invariant pixels, Nielsen 2007; orthogonal
regression per band, Canty & Nielsen 2008) is applied here to a single-date scene:
its bands are fitted to the same bands of a reference scene (date 1) on the pixels
valid in both, and the scene is predicted in the reference's radiometry.

The reference must lie on the scene's grid (CRS, transform, size), as for
``geoseg stack``: pixels are paired by position. The fit is recorded in the scene's
tags (:data:`NORMALIZE_TAG`), which ``predict`` carries into the map.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import dask.array as da

from geoseg.change.radiometric import NORMALIZE_METHODS, DateFit, fit_dates, normalized
from geoseg.errors import BandMismatchError, GeosegError
from geoseg.io.raster import Scene

__all__ = ["NORMALIZE_TAG", "normalize_to_reference"]

log = logging.getLogger(__name__)

#: Map tag holding the reference and the fitted gains/offsets (JSON).
NORMALIZE_TAG = "GEOSEG_NORMALIZED_TO"


def _check_pair(scene: Scene, reference: Scene) -> None:
    """Refuse a reference off the scene's grid or with other bands."""
    if (scene.crs, scene.transform, scene.height, scene.width) != (
        reference.crs, reference.transform, reference.height, reference.width,
    ):  # fmt: skip
        raise GeosegError(
            f"{scene.path}: not on the grid of the reference {reference.path} "
            f"({scene.height}x{scene.width} vs {reference.height}x{reference.width}, "
            f"{scene.crs} vs {reference.crs}); warp it first, e.g. "
            f"`gdalwarp -tr <res> -te <bounds> -t_srs {reference.crs}`"
        )
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
    fit = fit_dates(data, usable, [bands, [k + b for b in bands]], source)[0]
    log.info(
        "%s: normalised to %s on %.1f %% of %d sampled px: gains %s, offsets %s",
        scene.path, reference.path, 100 * fit.invariant_share, fit.sampled,
        [round(g, 4) for g in fit.gains], [round(o, 4) for o in fit.offsets],
    )  # fmt: skip
    lazy = normalized(scene.data.data, [bands, bands], [fit], scene.nodata)
    doc = {
        "method": method, "reference": os.path.basename(reference.path),
        "gains": list(fit.gains), "offsets": list(fit.offsets),
        "correlations": list(fit.correlations), "invariant_share": fit.invariant_share,
    }  # fmt: skip
    tags = {**scene.tags, NORMALIZE_TAG: json.dumps(doc)}
    return dataclasses.replace(scene, data=scene.data.copy(data=lazy), tags=tags), fit
