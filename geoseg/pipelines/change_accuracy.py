"""Accuracy of a change report: a stratified sample to label, error-adjusted areas from it.

The strata are the change codes of ``change.tif``; the estimator is Olofsson et
al. (2014), see :mod:`geoseg.change.accuracy`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.areas import HECTARE_M2
from geoseg.change.accuracy import error_matrix, sample_design, stratified_estimate, undersampled
from geoseg.change.align import AlignedMaps
from geoseg.change.matrix import TransitionMatrix
from geoseg.change.sampling import stratified_sample
from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.raster import open_scene
from geoseg.io.reports import write_json
from geoseg.io.samples import write_sample_points
from geoseg.io.vectors import read_vectors
from geoseg.report import write_csv_rows
from geoseg.types import ClassSchema

if TYPE_CHECKING:  # change.py imports this module
    from geoseg.pipelines.change import ChangeOptions

__all__ = [
    "SAMPLES", "check_sample_strata", "keep_old_samples", "read_reference",
    "refuse_labelled_samples", "write_accuracy", "write_samples",
]  # fmt: skip

log = logging.getLogger(__name__)

#: The sample sheet a user labels in place: never removed as a stale file.
SAMPLES = "samples.gpkg"


def keep_old_samples(folder: Path, names: Sequence[str], inputs: Sequence[Path] = ()) -> None:
    """Keep an earlier report's sample sheet (it may hold the user's labels) on --overwrite:
    refuse to replace a labelled one, warn that one this run does not write stays.

    Args:
        folder: the report folder.
        names: the files this report writes.
        inputs: the run's inputs (a sheet read as ``--reference`` is not stale).

    Raises:
        OutputExistsError: this report writes a sample sheet and the one there has labels.
    """
    path = folder / SAMPLES
    if SAMPLES in names:
        refuse_labelled_samples(path)
    elif path.is_file() and not any(p.exists() and path.samefile(p) for p in inputs):
        log.warning(
            "%s is an earlier report's sample (this run writes none) and is kept, as it may "
            "hold your labels; its points do not sample this report's change.tif",
            path,
        )


def refuse_labelled_samples(path: Path, command: str = "") -> None:
    """Refuse to replace a sample sheet with any non-empty ``reference`` value: the labels
    are the user's work, which --overwrite would swap for an unlabelled sample.
    ``command``: the one that takes ``--reference``, where it is not the one running.

    Raises:
        OutputExistsError: naming the file, its labelled points and the fix.
    """
    if not path.is_file():
        return
    try:
        frame = read_vectors(str(path))
    except GeosegError:  # not a layer geoseg can read: no labels to lose
        return
    if "reference" not in frame.columns:
        return
    refs = frame["reference"]
    labelled = int((refs.notna() & (refs.astype("string").str.strip() != "")).sum())
    if labelled:
        raise OutputExistsError(
            f"{path} holds {labelled} labelled sample points (its 'reference' column); "
            "--overwrite would replace them with an unlabelled sample: move it out of the "
            f"report folder first (pass the moved file as --reference{command} for "
            "error-adjusted areas)"
        )


def write_samples(
    m: TransitionMatrix,
    aligned: AlignedMaps,
    codes: ClassSchema,
    paths: dict[str, Path],
    opts: ChangeOptions,
) -> None:
    """``samples.gpkg``: a stratified random sample of change.tif's codes to label.

    Strata sizes follow :func:`geoseg.change.accuracy.sample_design` for
    ``opts.samples_se`` (expected user's accuracy 0.9 unchanged, 0.7 change), never
    under ``min(2, N_h)`` for a stratum of ``N_h`` pixels: 2 points give a standard
    error, and a stratum of 1 pixel sampled once is a census (see :func:`write_accuracy`).
    """
    k = len(m.names)
    pixels = m.strata_pixels()  # the uncertain stratum too (posterior rule)
    present = np.flatnonzero(pixels > 0)
    expected = np.where(present // k == present % k, 0.9, 0.7)
    sizes = sample_design(pixels[present], expected, opts.samples_se or 0.01)
    sizes = np.minimum(np.maximum(sizes, 2), pixels[present])
    strata = open_scene(paths["change.tif"], chunk=opts.chunk).data.data[0]
    points = stratified_sample(strata, aligned.transform, dict(zip(present, sizes, strict=True)))
    names = {c.id: c.name for c in codes.classes}
    write_sample_points(points, paths["samples.gpkg"], aligned.crs, names, opts.overwrite)


def _reference_codes(values: Any, codes: ClassSchema, column: str, source: str) -> np.ndarray:
    """``(N,) int64`` change codes of ``values`` (codes or names like ``forest -> urban``)."""
    by_name = {c.name: c.id for c in codes.classes}
    out = []
    for v in values:
        text = str(v).strip()
        code = int(text) if text.isdigit() else by_name.get(text)
        if code is None or code not in codes.ids:
            raise GeosegError(
                f"{source}: {column} value {text!r} is not a change code (0-{len(codes) - 1}) "
                "or a name like 'forest -> urban'; label every sample point"
            )
        if column == "reference" and codes.classes[codes.ids.index(code)].name == "uncertain":
            raise GeosegError(
                f"{source}: reference value {text!r}: a reference label is what is on the "
                "ground, a transition like 'forest -> urban', never 'uncertain'"
            )
        out.append(code)
    return np.asarray(out, dtype=np.int64)


def read_reference(source: str, codes: ClassSchema) -> np.ndarray:
    """``(K*K, K*K)`` sample counts (rows map code, cols reference code) from a labelled layer."""
    frame = read_vectors(source)
    for column in ("stratum", "reference"):
        if column not in frame.columns:
            raise GeosegError(f"{source}: no {column!r} column; use the samples.gpkg layout")
    return error_matrix(
        _reference_codes(frame["stratum"], codes, "stratum", source),
        _reference_codes(frame["reference"], codes, "reference", source),
        len(codes),
    )


def _point_xy(geometry: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N,) float64`` x and y of a layer of points (NaN for an empty point).

    Raises:
        GeosegError: a feature is not a point (a sample is points).
    """
    kinds = set(geometry.geom_type.dropna()) - {"Point"}
    if kinds or geometry.isna().any():
        what = ", ".join(sorted(kinds)) or "no geometry"
        raise GeosegError(
            f"{source}: sample features must be points, found {what}; use the points of "
            "samples.gpkg"
        )
    return np.asarray(geometry.x, np.float64), np.asarray(geometry.y, np.float64)


def check_sample_strata(source: str, codes: ClassSchema, change_tif: Path) -> None:
    """Refuse reference points whose ``stratum`` is not ``change.tif``'s code where they lie.

    The stratified estimator weights each stratum by its area in *this* change map,
    so a sample drawn from another map (other dates' maps, rule, threshold, MMU or
    consistency) would give a confident, wrong area.

    Raises:
        GeosegError: a point outside the map or in another stratum than its column says.
    """
    import rasterio
    from rasterio.transform import rowcol

    frame = read_vectors(source)
    strata = _reference_codes(frame["stratum"], codes, "stratum", source)
    with rasterio.open(change_tif) as src:
        if frame.crs is not None and src.crs is not None and frame.crs != src.crs:
            frame = frame.to_crs(src.crs)
        x, y = _point_xy(frame.geometry, source)
        # a point the map's CRS cannot hold (infinite there) lies outside the map
        finite = np.isfinite(x) & np.isfinite(y)
        rows, cols = np.full(len(frame), -1), np.full(len(frame), -1)
        if finite.any():
            at = rowcol(src.transform, x[finite], y[finite])
            rows[finite], cols[finite] = np.asarray(at[0]), np.asarray(at[1])
        inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
        found = np.full(len(frame), -1, np.int64)
        xy = zip(x[inside], y[inside], strict=True)
        found[inside] = [int(v[0]) for v in src.sample(xy, indexes=1)]  # block by block
    wrong = np.flatnonzero(found != strata)
    if wrong.size:
        i = int(wrong[0])
        where = "outside the map" if found[i] < 0 else f"in stratum {found[i]}"
        raise GeosegError(
            f"{source}: {wrong.size} of {len(frame)} sample points do not lie in the stratum "
            f"their 'stratum' column gives (point {i}: stratum {strata[i]}, {where} of "
            f"{change_tif.name}); the sample was drawn from another change map (other maps, "
            "rule, threshold, MMU or consistency): draw one from this run with --samples-se "
            "and label it"
        )


def write_accuracy(
    m: TransitionMatrix,
    codes: ClassSchema,
    n: np.ndarray,
    paths: dict[str, Path],
    opts: ChangeOptions,
) -> None:
    """``accuracy.csv`` and ``accuracy.json``: error-adjusted areas (ha) from ``n``.

    The variances carry the finite-population correction ``1 - n_h / N_h`` with
    ``N_h`` the stratum's pixels in change.tif, so a stratum whose points cover all
    its pixels (a census, e.g. 1 pixel, 1 point) is exact and needs no second point.

    Args:
        n: ``(K*K, K*K)`` sample counts from :func:`read_reference`.

    Raises:
        GeosegError: a mapped stratum that is not a census has fewer than 2 reference samples.
    """
    mapped_ha = m.strata_area_m2() / HECTARE_M2
    pixels = m.strata_pixels()
    short = undersampled(n.sum(axis=1), mapped_ha, pixels)
    if short.any():
        names = ", ".join(c.name for c, s in zip(codes.classes, short, strict=True) if s)
        raise GeosegError(
            f"{opts.reference}: strata {names} are mapped but have fewer than 2 reference "
            "samples (and fewer than their pixels); sample every stratum (--samples-se) and "
            "label the points"
        )
    check_sample_strata(str(opts.reference), codes, paths["change.tif"])
    est = stratified_estimate(n, mapped_ha, pixels)
    rows = [
        {"stratum": c.name, "code": c.id, "samples": int(n[i].sum()),
         "mapped_area_ha": float(est.mapped_area[i]), "adjusted_area_ha": float(est.area[i]),
         "area_se_ha": float(est.area_se[i]), "ci95_ha": float(est.area_ci95[i]),
         "users_accuracy": float(est.users_accuracy[i]), "users_se": float(est.users_se[i]),
         "producers_accuracy": float(est.producers_accuracy[i]),
         "producers_se": float(est.producers_se[i])}
        for i, c in enumerate(codes.classes)
    ]  # fmt: skip
    write_csv_rows(paths["accuracy.csv"], rows, opts.overwrite)
    doc = {"method": "Olofsson et al. (2014) stratified estimator, strata = change codes, "
                     "finite-population correction 1 - n_h/N_h (N_h = stratum pixels)",
           "overall_accuracy": est.overall_accuracy, "overall_se": est.overall_se,
           "error_matrix": n, "strata": rows}  # fmt: skip
    write_json(paths["accuracy.json"], doc, opts.overwrite)
