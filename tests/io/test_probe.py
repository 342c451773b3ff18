"""Telling rasters, vector files and checkpoints apart (geoseg.io.probe)."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geoseg.errors import InputNotFoundError, UnknownFileError
from geoseg.io.probe import file_kind
from tests.conftest import make_tiny_checkpoint, textured_scene, write_raster


def test_each_kind_is_recognised(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "s.tif", textured_scene(8, 8))
    layer = tmp_path / "f.fgb"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_file(layer)
    model = make_tiny_checkpoint(tmp_path / "m.safetensors")
    renamed = shutil.copy(model, tmp_path / "model.bin")  # known by its header, not its name
    assert [file_kind(p) for p in (raster, layer, model, renamed)] == [
        "raster", "vector", "checkpoint", "checkpoint",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "the file is empty"),
        (b"plain text\n", "neither a raster"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{", "neither a raster"),  # header longer than the file
        (np.arange(256, dtype=np.uint8).tobytes() * 8, "neither a raster"),
    ],
)
def test_other_files_are_refused(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "x.dat"
    path.write_bytes(content)
    with pytest.raises(UnknownFileError, match=words) as err:
        file_kind(path)
    assert str(path) in str(err.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        file_kind(tmp_path / "nope.tif")
    with pytest.raises(UnknownFileError, match="folder"):
        file_kind(tmp_path)
