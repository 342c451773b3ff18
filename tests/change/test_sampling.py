from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from affine import Affine

from geoseg.change.sampling import stratified_sample
from geoseg.errors import GeosegError, OutputExistsError
from geoseg.io.samples import write_sample_points
from geoseg.io.vectors import read_vectors

TRANSFORM = Affine(10, 0, 500_000, 0, -10, 5_100_000)


def _strata() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.choice(np.array([0, 1, 5]), size=(60, 45), p=[0.9, 0.08, 0.02])


def test_points_fall_in_their_stratum_without_repeats() -> None:
    s = _strata()
    sizes = {0: 30, 1: 20, 5: int((s == 5).sum())}  # a stratum taken whole
    pts = stratified_sample(da.from_array(s, chunks=16), TRANSFORM, sizes, seed=1)
    assert np.bincount(pts.stratum, minlength=6)[[0, 1, 5]].tolist() == list(sizes.values())
    np.testing.assert_array_equal(s[pts.row, pts.col], pts.stratum)
    assert len(set(zip(pts.row.tolist(), pts.col.tolist(), strict=True))) == pts.row.size
    np.testing.assert_allclose(pts.x, 500_000 + 10 * (pts.col + 0.5))
    again = stratified_sample(da.from_array(s, chunks=16), TRANSFORM, sizes, seed=1)
    np.testing.assert_array_equal(again.row, pts.row)


def test_too_many_points_are_refused() -> None:
    with pytest.raises(GeosegError, match="stratum 5"):
        stratified_sample(da.from_array(_strata(), chunks=16), TRANSFORM, {5: 10_000})


def test_sample_points_gpkg(tmp_path: Path) -> None:
    pts = stratified_sample(da.from_array(_strata(), chunks=32), TRANSFORM, {0: 5, 1: 3})
    out = write_sample_points(pts, tmp_path / "samples.gpkg", "EPSG:32633", {0: "stable"})
    frame = read_vectors(out)
    assert len(frame) == 8 and frame.crs.to_epsg() == 32633
    assert set(frame["stratum_name"]) == {"stable", "1"}
    assert frame["reference"].isna().all()
    with pytest.raises(OutputExistsError):
        write_sample_points(pts, out, "EPSG:32633")
