"""``change --reference``: the labelled sample must come from this change map's strata.

The Olofsson estimator weights each stratum by its mapped area in the current
change.tif; a sample drawn from another map (e.g. a run before ``normalize_dates``
or another MMU) was used with exit 0 before, giving a confident, wrong area.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shapely

from geoseg.errors import GeosegError
from geoseg.io.vectors import read_vectors, write_vectors
from geoseg.pipelines.change import ChangeOptions, change_report
from tests.change.helpers import random_labels, write_labels


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[list[Path], Path]:
    """Two dates and a perfectly labelled sample drawn from their plain change map."""
    maps = [
        write_labels(tmp_path / "2019.tif", random_labels((70, 50), 0), date="2019-06-01"),
        write_labels(tmp_path / "2023.tif", random_labels((70, 50), 1), date="2023-06-01"),
    ]
    change_report(maps, tmp_path / "drawn", ChangeOptions(samples_se=0.05))
    samples = read_vectors(tmp_path / "drawn" / "samples.gpkg")
    samples["reference"] = samples["stratum_name"]
    write_vectors(samples, tmp_path / "labelled.gpkg")
    return maps, tmp_path / "labelled.gpkg"


def _edit(path: Path, how: str) -> Path:
    """The labelled sample changed by ``how``; a new file beside it."""
    frame = read_vectors(path)
    if how == "moved":  # point 0 pushed 1 km east, off the map
        frame.loc[0, "geometry"] = frame.geometry[0].__class__(
            frame.geometry[0].x + 1000, frame.geometry[0].y
        )
    elif how == "stratum":  # point 0 said to be in another stratum than the map's
        other = frame.loc[frame["stratum"] != frame.loc[0, "stratum"], "stratum"].iloc[0]
        frame.loc[0, "stratum"] = other
    elif how == "lonlat":  # the analyst saved the layer in lon/lat
        frame = frame.to_crs(4326)
    elif how == "unprojectable":  # point 0 at 82 deg W of UTM 33N's meridian: infinite there
        frame = frame.to_crs(4326)
        frame.loc[0, "geometry"] = shapely.Point(-67.0, 2.0)
    elif how == "polygon":  # the analyst drew point 0 as a small square
        frame.loc[0, "geometry"] = frame.geometry[0].buffer(1.0, cap_style="square")
    out = path.with_name(f"{how}.gpkg")
    write_vectors(frame, out)
    return out


@pytest.mark.parametrize(
    ("how", "options", "message"),
    [
        ("same", {"mmu_ha": 0.05}, "sample points do not lie in the stratum"),
        ("same", {"remapped": 1}, "sample points do not lie in the stratum"),
        ("moved", {}, "point 0: stratum"),
        ("moved", {}, "outside the map of change.tif"),
        ("unprojectable", {}, "outside the map of change.tif"),
        ("stratum", {}, "1 of"),
    ],
)
def test_sample_from_another_change_map_is_refused(
    tmp_path: Path, labelled: tuple[list[Path], Path], how: str, options: dict[str, float],
    message: str,
) -> None:  # fmt: skip
    maps, sample = labelled
    if options.pop("remapped", 0):  # date 2 predicted again (e.g. normalised): a new map
        maps = [maps[0], write_labels(tmp_path / "again.tif", random_labels((70, 50), 2))]
    reference = sample if how == "same" else _edit(sample, how)
    out = tmp_path / "adjusted"
    with pytest.raises(GeosegError) as info:
        change_report(maps, out, ChangeOptions(reference=str(reference), **options))
    assert message in str(info.value) and str(reference) in str(info.value)
    assert "--samples-se" in str(info.value) and not out.exists()


@pytest.mark.parametrize("how", ["same", "lonlat"])
def test_sample_of_this_map_is_accepted(
    tmp_path: Path, labelled: tuple[list[Path], Path], how: str
) -> None:
    maps, sample = labelled
    reference = sample if how == "same" else _edit(sample, how)
    change_report(maps, tmp_path / "adjusted", ChangeOptions(reference=str(reference)))
    doc = json.loads((tmp_path / "adjusted" / "accuracy.json").read_text())
    assert doc["overall_accuracy"] == 1.0


def test_sample_features_that_are_not_points_are_refused(
    tmp_path: Path, labelled: tuple[list[Path], Path]
) -> None:
    maps, sample = labelled
    out = tmp_path / "adjusted"
    with pytest.raises(GeosegError, match="must be points, found Polygon") as info:
        change_report(maps, out, ChangeOptions(reference=str(_edit(sample, "polygon"))))
    assert "polygon.gpkg" in str(info.value) and not out.exists()
