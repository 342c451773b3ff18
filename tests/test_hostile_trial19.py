"""Findings of the nineteenth new-user trial (``change``, ``stack``, ``predict`` on real
data): a traceback, and refusals that named the wrong cause, must now name the true one.

Table-driven: each case builds its inputs in ``tmp_path``, runs the CLI and names what
the messages (output and log records together) must and must not say.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from tests.change.helpers import random_labels, write_labels
from tests.cli_cases import CliCase, run_cli_case
from tests.conftest import TINY_BANDS, make_tiny_checkpoint, textured_scene, write_raster
from tests.test_hostile_trial import _checkpoint as trained_on_means


def _maps(tmp: Path) -> list[str]:
    """Two 10 x 10 label maps of 10 m pixels in UTM 33N (x 500000-500100)."""
    return [str(write_labels(tmp / f"{n}.tif", random_labels((10, 10), s))) for n, s in
            (("a", 0), ("b", 1))]  # fmt: skip


def _world_aoi(tmp: Path) -> str:
    """Lon/lat boxes around the world (as Sen1Floods11's metadata): one 82 degrees west of
    UTM 33N's central meridian, where its coordinates become infinite; none near the maps."""
    boxes = [(-67.0, 2.0, -66.5, 2.5), (100.0, 10.0, 101.0, 11.0), (-1.1, 37.6, 1.2, 39.4)]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": f"f{i}"},
         "geometry": shapely.geometry.mapping(shapely.box(*b))} for i, b in enumerate(boxes)
    ]}  # fmt: skip
    path = tmp / "world.geojson"
    path.write_text(json.dumps(doc))
    return str(path)


def _truncated_map(tmp: Path) -> list[str]:
    """The first map, and the second laid out as `predict` writes it (a COG) and cut inside
    its tags: GDAL reads the cut file as one without a CRS."""
    import rasterio.shutil

    first, plain = _maps(tmp)
    cog = tmp / "cut.tif"
    rasterio.shutil.copy(plain, cog, driver="COG", compress="deflate")
    data = cog.read_bytes()
    cog.write_bytes(data[: data.index(b"GEOSEG_CLASSES")])  # inside the tag values
    return [first, str(cog)]


def _float_scene(tmp: Path, name: str, lost: str | None = None, seed: int = 1) -> str:
    """A 64 x 64 float32 reflectance scene of the tiny model's bands; band ``lost`` all NaN."""
    data = textured_scene(64, 64, seed=seed).astype(np.float32) * 1e-4
    if lost is not None:
        data[TINY_BANDS.index(lost)] = np.nan
    return str(write_raster(tmp / name, data, descriptions=TINY_BANDS))


def _predict(tmp: Path, scene: str, *extra: str) -> list[str]:
    model = str(make_tiny_checkpoint(tmp / "m.safetensors"))
    return ["predict", scene, "-m", model, "-o", str(tmp / "o.tif"), "--device", "cpu", *extra]


def _change_raster_as_map(tmp: Path) -> list[str]:
    """A change report's change.tif (its classes "forest -> water" ...) given as a label map."""
    from click.testing import CliRunner

    from geoseg.cli import cli

    first, later = _maps(tmp)
    run = CliRunner().invoke(cli, ["change", first, later, "-o", str(tmp / "r1")])
    assert run.exit_code == 0, run.output
    return ["change", str(tmp / "r1" / "change.tif"), later, "-o", str(tmp / "r2")]


def _all_nodata_date(tmp: Path) -> list[str]:
    first = write_labels(tmp / "a.tif", random_labels((10, 10), 0))
    empty = write_labels(tmp / "b.tif", np.full((10, 10), 255, np.uint8))
    return ["change", str(first), str(empty), "-o", str(tmp / "r")]


def _b08_first_with_bands(tmp: Path) -> list[str]:
    """Unnamed bands stored B08, B04, B03, B02 (reflectance 0.3, 0.05 ...), read with
    --bands 1,2,3,4: the user's order, not one assumed from the file."""
    data = np.stack([np.full((64, 64), v, np.uint16) for v in (3000, 500, 500, 500)])
    data += textured_scene(64, 64, bands=4) // 100
    scene = str(write_raster(tmp / "rev.tif", data, nodata=0))
    model = str(trained_on_means(tmp))  # says B02-B04 0.05 +- 0.01, B08 0.3
    return ["predict", scene, "-m", model, "-o", str(tmp / "o.tif"), "--bands", "1,2,3,4"]


def _normalize_to(tmp: Path, scene_date: str, reference_date: str) -> list[str]:
    """A scene normalised to another date of the same ground (darker by a known gain)."""
    import rasterio

    data = textured_scene(64, 64, seed=1).astype(np.float32) * 1e-4
    ref = write_raster(tmp / "r.tif", data, descriptions=TINY_BANDS)
    scene = write_raster(tmp / "s.tif", data * 0.8 + 0.01, descriptions=TINY_BANDS)
    for path, date in ((scene, scene_date), (ref, reference_date)):
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(ACQUISITION=date)
    return _predict(tmp, str(scene), "--normalize-to", str(ref))


CASES = {
    # 2: "ValueError: repeats may not contain negative values" (exit 1, a traceback)
    "aoi_around_the_world": CliCase(
        lambda tmp: ["change", *_maps(tmp), "-o", str(tmp / "r"), "--aoi", _world_aoi(tmp)],
        2,
        (
            "world.geojson: the AOI does not overlap the maps",
            "world.geojson: 1 of 3 features cannot be put in the CRS of",
        ),
        absent=("r",),
    ),
    # 3a: "the raster has no CRS; set one with `gdal_edit.py -a_srs EPSG:XXXX`"
    "truncated_label_map": CliCase(
        lambda tmp: ["change", *_truncated_map(tmp), "-o", str(tmp / "r")],
        2,
        ("cut.tif: the file is truncated (its ", "download it again"),
        never=("no CRS", "gdal_edit"),
        absent=("r",),
    ),
    # 3b: "every pixel of the input is nodata; check the scene's nodata value"
    "predict_nan_band": CliCase(
        lambda tmp: _predict(tmp, _float_scene(tmp, "s.tif", "B04")),
        2,
        (
            "s.tif: band B04 holds no valid value (every value is NaN or infinite), so every "
            "pixel of the input is nodata",
        ),
        never=("nodata value (`gdalinfo`)",),
        absent=("o.tif",),
    ),
    # 3b: "0 invariant pixels of 0 sampled ... the dates differ too much"
    "predict_normalize_to_nan_reference": CliCase(
        lambda tmp: _predict(
            tmp,
            _float_scene(tmp, "s.tif", seed=2),
            "--normalize-to",
            _float_scene(tmp, "r.tif", "B03"),
        ),
        2,
        (
            "r.tif: band B03 holds no valid value (every value is NaN or infinite), so no pixel "
            "is valid on every date to normalise on",
        ),
        never=("invariant pixels",),
        absent=("o.tif",),
    ),
    # 3c: "25 classes give 625 transition codes ... merge classes to at most 15"
    "change_raster_as_label_map": CliCase(
        _change_raster_as_map,
        2,
        (
            "change.tif: is a change raster written by `geoseg change` (transition codes from ",
            "a.tif to ",
            "b.tif), not a label map of class ids; pass the label maps themselves",
        ),
        never=("transition codes, more than",),
        absent=("r2",),
    ),
    # 3d: "a.tif / b.tif: every pixel of the input is nodata"
    "all_nodata_date": CliCase(
        _all_nodata_date,
        2,
        ("b.tif: every pixel is nodata (255) on the maps' common grid",),
        never=("a.tif",),
        absent=("r",),
    ),
    # 4: "the file does not name its bands, so B02... were assumed in file order" after --bands
    "outside_training_with_bands": CliCase(
        _b08_first_with_bands,
        0,
        (
            "band order? --bands 1,2,3,4 read the file's bands as B02, B03, B04, B08; the bands "
            "read in reverse fit: try --bands 4,3,2,1",
        ),
        never=("assumed in file order", "does not name its bands"),
    ),
    # 5: a reference dated after the scene was taken in silence (the help said "earlier")
    "normalize_to_a_later_date": CliCase(
        lambda tmp: _normalize_to(tmp, "2020-07-01", "2020-09-01"),
        0,
        (
            "s.tif (acquired 2020-07-01): --normalize-to ",
            "r.tif is a later date (acquired 2020-09-01)",
            "normalise every date of one change report to the same reference",
        ),
    ),
    "normalize_to_an_earlier_date": CliCase(
        lambda tmp: _normalize_to(tmp, "2020-09-01", "2020-07-01"),
        0,
        ("normalised to r.tif (irmad)",),
        never=("later date",),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trial19_case(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_cli_case(CASES[name], tmp_path, caplog)


def test_normalize_to_help_says_what_it_does() -> None:
    """The help said "an earlier scene" while a later one was taken in silence."""
    from click.testing import CliRunner

    from geoseg.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["predict", "--help"]).output.split())
    assert "--normalize-to FILE Another date of the same place" in text
    assert "(usually the earliest; a later one is warned about)" in text
    assert "An earlier scene" not in text
