"""Hostile inputs to ``geoseg change --rule posterior``: each refused with exit code 2, one
line that names the file and says the fix, and nothing written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.probabilities import PROBABILITIES_TAG, quantize
from geoseg.types import ClassInfo, ClassSchema
from tests.change.helpers import labels_of, random_probabilities, write_labels, write_probabilities
from tests.conftest import write_raster

SHAPE = (20, 30)


def _pair(tmp: Path, tag: bool = True) -> tuple[list[Path], list[Path]]:
    maps, probs = [], []
    for i in range(2):
        p = random_probabilities(SHAPE, i)
        path = write_labels(tmp / f"lc{i}.tif", labels_of(p))
        probs.append(write_probabilities(path, p, tag=tag))
        maps.append(path)
    return maps, probs


def _no_tags(tmp: Path) -> list[str]:
    maps, _ = _pair(tmp, tag=False)
    return [*map(str, maps), "--rule", "posterior"]


def _moved(tmp: Path) -> list[str]:
    maps, probs = _pair(tmp)
    shutil.move(probs[1], tmp / "elsewhere.tif")
    return [*map(str, maps), "--rule", "posterior"]


def _given(tmp: Path, edit: Callable[[Path, list[Path]], list[str]]) -> list[str]:
    maps, probs = _pair(tmp, tag=False)
    return [*map(str, maps), "--rule", "posterior", "--probabilities-of", *edit(tmp, probs)]


def _rewrite(path: Path, data: np.ndarray, transform: Affine | None = None, **tags: str) -> None:
    with rasterio.open(path) as src:
        old_tags, t = src.tags(), transform or src.transform
    write_raster(path, data, transform=t, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{**old_tags, **tags})


def _two_bands(tmp: Path, probs: list[Path]) -> list[str]:
    with rasterio.open(probs[1]) as src:
        _rewrite(probs[1], src.read()[:2])
    return [str(p) for p in probs]


def _float_bands(tmp: Path, probs: list[Path]) -> list[str]:
    with rasterio.open(probs[1]) as src:
        _rewrite(probs[1], src.read().astype(np.float32) / 254)
    return [str(p) for p in probs]


def _other_classes(tmp: Path, probs: list[Path]) -> list[str]:
    other = ClassSchema(tuple(ClassInfo(i, n, (0, 0, 0)) for i, n in enumerate(("a", "b", "c"))))
    with rasterio.open(probs[1], "r+") as dst:
        dst.update_tags(GEOSEG_CLASSES=json.dumps(other.to_json()))
    return [str(p) for p in probs]


def _other_grid(tmp: Path, probs: list[Path]) -> list[str]:
    with rasterio.open(probs[1]) as src:
        data, t = src.read(), src.transform
    _rewrite(probs[1], data, Affine(t.a, 0, t.c + 20, 0, t.e, t.f))
    return [str(p) for p in probs]


def _truncated(tmp: Path, probs: list[Path]) -> list[str]:
    """Date 1's file laid out as `predict` writes it (a COG) and cut inside its tags:
    GDAL reads no CRS, so it looked like a file on another grid."""
    import rasterio.shutil

    cog = tmp / "cut.tif"
    rasterio.shutil.copy(probs[1], cog, driver="COG", compress="deflate")
    data = cog.read_bytes()
    cog.write_bytes(data[: data.index(b"GEOSEG_CLASSES")])
    return [str(probs[0]), str(cog)]


def _another_date(tmp: Path, probs: list[Path]) -> list[str]:
    """Date 1's file replaced by date 0's with 3 % of pixels changed: same grid, classes,
    name and tags; only the content tells."""
    with rasterio.open(probs[0]) as src:
        data = src.read()
    p = random_probabilities(SHAPE, 5)
    changed = np.random.default_rng(5).random(SHAPE) < 0.03
    data[:, changed] = quantize(p)[:, changed]
    _rewrite(probs[1], data)
    return [str(p) for p in probs]


def _holes(tmp: Path, probs: list[Path]) -> list[str]:
    with rasterio.open(probs[1]) as src:
        data = src.read()
    data[:, :3] = 255  # 10 % of the pixels, classed in the map
    _rewrite(probs[1], data)
    return [str(p) for p in probs]


def _swapped_folders(tmp: Path) -> list[str]:
    """y1/lc.tif, y2/lc.tif with y1/p.tif, y2/p.tif given the other way round."""
    maps, probs = [], []
    for i in range(2):
        (tmp / f"y{i}").mkdir()
        p = random_probabilities(SHAPE, i)
        path = write_labels(tmp / f"y{i}" / "lc.tif", labels_of(p))
        probs.append(str(write_probabilities(path, p, tmp / f"y{i}" / "p.tif", tag=False)))
        maps.append(str(path))
    return [*maps, "--rule", "posterior", "--probabilities-of", probs[1], probs[0]]


#: name -> (arguments after the two maps are made in tmp, text the one line must hold)
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "no probability tags, none given": (_no_tags, "--probabilities for every date"),
    "tag names a moved file": (_moved, "--probabilities-of"),
    "one file for two maps": (lambda t: _given(t, lambda _, p: [str(p[0])]),
                              "one probability file per map"),
    "given file missing": (lambda t: _given(t, lambda _, p: [str(p[0]), str(t / "no.tif")]),
                           "no such probability file"),
    "given in the wrong order": (lambda t: _given(t, lambda _, p: [str(p[1]), str(p[0])]),
                                 "tag names lc1.tif"),
    "another date's file, renamed and retagged": (
        lambda t: _given(t, _another_date), "disagree with"),
    "same names in two folders, swapped": (_swapped_folders, "y0/lc.tif at 66.7 % of 600 sampled"),
    "nodata where the map has classes": (lambda t: _given(t, _holes), "disagree with"),
    "--min-change-prob without the rule": (
        lambda t: [*map(str, _pair(t)[0]), "--min-change-prob", "0.8"], "--rule posterior"),
    "two bands for three classes": (lambda t: _given(t, _two_bands), "3 uint8 class prob"),
    "float bands": (lambda t: _given(t, _float_bands), "float32 bands"),
    "other classes": (lambda t: _given(t, _other_classes), "are not those of"),
    "other grid": (lambda t: _given(t, _other_grid), "not on the grid of its label map"),
    "truncated": (lambda t: _given(t, _truncated), "cut.tif: the file is truncated (its "),
    "--probabilities-of without the rule": (
        lambda t: [*map(str, _pair(t)[0]), "--probabilities-of", *map(str, _pair(t)[1])],
        "--rule posterior"),
    "threshold below 0.5": (
        lambda t: [*map(str, _pair(t)[0]), "--rule", "posterior", "--min-change-prob", "0.3"],
        "0.5<=x<=1"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_with_one_line_and_nothing_written(tmp_path: Path, case: str) -> None:
    make, text = CASES[case]
    args = make(tmp_path)
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["change", *args, "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert text in res.output, res.output
    assert "Traceback" not in res.output and len(lines) <= 3  # click usage errors: 3 lines
    assert not out.exists()


def test_tag_names_the_probability_file_relative_to_its_map(tmp_path: Path) -> None:
    maps, probs = _pair(tmp_path)
    with rasterio.open(maps[0]) as src:
        assert src.tags()[PROBABILITIES_TAG] == probs[0].name
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in (*maps, *probs):  # the folder moves together: the relative tags still hold
        shutil.move(p, moved / p.name)
    res = CliRunner().invoke(
        cli, ["change", *(str(moved / m.name) for m in maps), "--rule", "posterior",
              "-o", str(tmp_path / "r")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
