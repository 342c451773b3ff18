"""A stratum whose sample covers all its pixels (a census) needs no second point.

``change --samples-se`` gives a 1-pixel change stratum its 1 point; ``--reference``
then refused the fully labelled sample for "fewer than 2 reference samples". With
the finite-population correction ``1 - n_h/N_h`` (Olofsson et al. 2014; Cochran) a
census has variance 0; a stratum of 5 pixels with 1 labelled point is still refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.change.accuracy import stratified_estimate
from geoseg.cli import cli
from geoseg.io.vectors import read_vectors, write_vectors
from tests.change.helpers import write_labels

# Stratum 0: 1 pixel, sampled once (a census), reference = 0.
# Stratum 1: 9 pixels, 3 sampled: 1 is really class 0, 2 are class 1.
COUNTS = [[1, 0], [1, 2]]
PIXELS = [1, 9]


def test_one_pixel_stratum_sampled_once_by_hand() -> None:
    e = stratified_estimate(COUNTS, PIXELS, population=PIXELS)
    # W = (0.1, 0.9); p = [[0.1, 0], [0.9/3, 0.9*2/3]] -> p.j = (0.4, 0.6), area = 10 p.j
    np.testing.assert_allclose(e.area, [4.0, 6.0])
    # V(p.j) = W_1^2 (1 - 3/9) (1/3)(2/3) / (3 - 1) = 0.81 * 2/3 * 2/9 / 2 = 0.06 (stratum 0
    # adds 0: a census, and its share is 0 or 1); without the correction it would be 0.09
    np.testing.assert_allclose(e.area_se, [10 * np.sqrt(0.06)] * 2)
    np.testing.assert_allclose(e.users_accuracy, [1.0, 2 / 3])
    np.testing.assert_allclose(e.users_se, [0.0, np.sqrt(2 / 3 * 2 / 9 / 2)])
    assert e.overall_accuracy == pytest.approx(0.7)
    assert e.overall_se == pytest.approx(np.sqrt(0.06))


def test_census_of_two_pixels_and_uncorrected_default() -> None:
    # both strata fully sampled: the areas are known exactly
    e = stratified_estimate([[1, 1], [0, 3]], [2, 3], population=[2, 3])
    np.testing.assert_allclose(e.area, [1.0, 4.0])
    np.testing.assert_allclose(e.area_se, 0.0)
    assert e.overall_se == 0.0 and (e.producers_se == 0).all()
    # no pixel counts: the paper's formulas as printed, a 1-unit stratum still refused
    with pytest.raises(Exception, match="at least 2 sample units"):
        stratified_estimate(COUNTS, PIXELS)


def _maps(tmp_path: Path) -> tuple[Path, Path]:
    """20 x 20 px: forest -> water on 1 px, forest -> urban on 5 px, the rest stable."""
    a = np.full((20, 20), 1, np.uint8)
    a[10:, :] = 4  # water
    b = a.copy()
    b[0, 0] = 4  # forest -> water: 1 pixel
    b[2, 3:8] = 9  # forest -> urban: 5 pixels
    return write_labels(tmp_path / "a.tif", a), write_labels(tmp_path / "b.tif", b)


def _labelled(tmp_path: Path) -> Path:
    """The sample of ``change --samples-se``, every point labelled from the truth."""
    a, b = _maps(tmp_path)
    args = ["change", str(a), str(b), "-o", str(tmp_path / "rep"), "--samples-se", "0.01"]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    frame = read_vectors(tmp_path / "rep" / "samples.gpkg")
    counts = frame["stratum_name"].value_counts().to_dict()
    # every stratum gets min(50, N_h) >= min(2, N_h) points: small ones are censused
    assert counts["forest -> water"] == 1 and counts["forest -> urban"] == 5
    assert counts["forest -> forest"] >= 2 and counts["water -> water"] >= 2
    # truth: 2 of the 5 "urban" pixels (cols 3, 4) are really still forest
    truth = np.where(frame["col"].isin([3, 4]) & (frame["row"] == 2), "forest -> forest",
                     frame["stratum_name"])  # fmt: skip
    frame["reference"] = truth
    write_vectors(frame, tmp_path / "labelled.gpkg")
    return tmp_path / "labelled.gpkg"


def test_cli_round_trip_with_one_pixel_stratum(tmp_path: Path) -> None:
    reference = _labelled(tmp_path)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    out = tmp_path / "rep3"
    args = ["change", str(a), str(b), "-o", str(out), "--reference", str(reference)]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    doc = json.loads((out / "accuracy.json").read_text())
    rows = {r["stratum"]: r for r in doc["strata"]}
    assert rows["forest -> water"]["samples"] == 1
    # every changed stratum is a census: the truth's areas come back exactly, SE 0
    ha = rows["forest -> water"]["mapped_area_ha"]  # one pixel
    assert rows["forest -> water"]["adjusted_area_ha"] == pytest.approx(ha)
    assert rows["forest -> water"]["area_se_ha"] == pytest.approx(0.0)
    urban = rows["forest -> urban"]
    assert urban["adjusted_area_ha"] == pytest.approx(0.6 * urban["mapped_area_ha"])
    assert urban["users_accuracy"] == pytest.approx(0.6) and urban["users_se"] == 0.0
    assert "finite-population correction" in doc["method"]


def test_five_pixel_stratum_with_one_point_still_refused(tmp_path: Path) -> None:
    reference = _labelled(tmp_path)
    frame = read_vectors(reference)
    urban = frame.index[frame["stratum_name"] == "forest -> urban"]
    write_vectors(frame.drop(index=urban[1:]), tmp_path / "short.gpkg")  # 1 of 5 left
    out = tmp_path / "rep4"
    args = ["change", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(out),
            "--reference", str(tmp_path / "short.gpkg")]  # fmt: skip
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 2 and not out.exists()
    # only the 5-pixel stratum is named: the 1-pixel one, sampled once, is a census
    assert "strata forest -> urban are mapped but have fewer than 2" in run.output
    assert "forest -> water" not in run.output and "short.gpkg" in run.output
