"""A GeoTIFF cut short is refused as truncated when opened, whatever GDAL makes of its
header (a cut inside the GeoKeys reads as "no CRS") (geoseg.io.truncation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from geoseg.errors import InvalidRasterError
from geoseg.io.raster import open_scene
from geoseg.io.tiff import entry_values, read_ifd
from geoseg.io.truncation import cut_short
from tests.change.helpers import random_labels, write_labels

GEO_KEYS, TILE_OFFSETS, TILE_SIZES = 34735, 324, 325


def _cog_label_map(tmp: Path, tile: int) -> Path:
    """A 40 x 30 label map laid out as a COG (tags before the tiles, as `predict` writes)."""
    plain = write_labels(tmp / "plain.tif", random_labels((40, 30), 0))
    cog = tmp / "map.tif"
    rasterio.shutil.copy(plain, cog, driver="COG", compress="deflate", blocksize=tile)
    return cog


@pytest.mark.parametrize(
    ("tile", "first_lost"),  # tags in number order: TileOffsets (324) before the GeoKeys
    [(512, "GeoKeyDirectory"), (16, "TileOffsets")],  # one tile: its offset is in the IFD
)
def test_a_cog_cut_inside_its_geokeys_is_refused_as_truncated(
    tmp_path: Path, tile: int, first_lost: str
) -> None:
    path = _cog_label_map(tmp_path, tile)
    data = path.read_bytes()
    ifd = read_ifd(data)
    cut = data.index(ifd[GEO_KEYS][2])  # the GeoKeys (the CRS) are lost, the IFD kept
    path.write_bytes(data[:cut])
    with rasterio.open(path) as src:
        assert src.crs is None  # what GDAL makes of it: a file without a CRS
    with pytest.raises(InvalidRasterError) as err:
        open_scene(path)
    text = str(err.value)
    assert text.startswith(f"{path}: the file is truncated (its {first_lost} tag ends at ")
    assert f"of a {cut:,}-byte file" in text
    assert "download it again" in text and "CRS" not in text


def test_a_file_cut_inside_its_last_tile_names_the_tile(tmp_path: Path) -> None:
    path = _cog_label_map(tmp_path, 16)
    data = path.read_bytes()
    assert cut_short(str(path)) is None  # intact
    ifd = read_ifd(data)
    ends = np.add(entry_values(ifd[TILE_OFFSETS]), entry_values(ifd[TILE_SIZES]))
    assert ends.size == 6  # 3 x 2 tiles of 16 px
    last = int(np.argmax(ends))
    path.write_bytes(data[: ends[last] - 1])
    assert cut_short(str(path)) == (
        f"TIFF tile {last} of 6 ends at byte {ends[last]:,} of a {ends[last] - 1:,}-byte file"
    )
    with pytest.raises(InvalidRasterError, match=r"map\.tif: the file is truncated"):
        open_scene(path)  # when opened, not at the first read of that tile


def test_files_that_are_not_tiffs_are_not_judged(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (tmp_path / "short").write_bytes(b"II*")
    assert cut_short(str(tmp_path / "a.png")) is None
    assert cut_short(str(tmp_path / "short")) is None
