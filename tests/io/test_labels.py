"""Tests for the streamed, atomic label COG writer (geoseg/io/labels.py)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geoseg.errors import GeosegError, InvalidRasterError, OutputExistsError
from geoseg.io.labels import CLASSES_TAG, LabelMeta, label_cog_writer, read_class_schema
from geoseg.types import NODATA_LABEL, ClassInfo, ClassSchema

UTM33 = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
SCHEMA = ClassSchema(
    (
        ClassInfo(1, "forest", (51, 160, 44)),
        ClassInfo(4, "water", (31, 120, 180)),
        ClassInfo(9, "building", (227, 26, 28), is_thing=True),
    )
)


def write_labels(path: Path, blocks: np.ndarray, block: int = 500, **kwargs: Any) -> Path:
    """Write ``(count, H, W) uint8`` through the writer in ``block``-sized pieces."""
    count, height, width = blocks.shape
    overwrite = kwargs.pop("overwrite", False)
    options: dict[str, Any] = {
        "crs": UTM33,
        "transform": TRANSFORM,
        "schema": SCHEMA,
        "descriptions": ("class", "confidence")[:count],
    }
    options.update(kwargs)
    meta = LabelMeta(**options)
    with label_cog_writer(path, meta, height=height, width=width, overwrite=overwrite) as sink:
        for y in range(0, height, block):
            for x in range(0, width, block):
                ys, xs = slice(y, min(y + block, height)), slice(x, min(x + block, width))
                sink[(slice(0, count), ys, xs)] = blocks[:, ys, xs]
    return path


def majority_pattern(height: int, width: int) -> np.ndarray:
    """``(1, H, W)``: in every 2x2 cell three pixels are forest (1), the top-left building (9).

    GDAL's nearest resampling picks the top-left pixel (-> 9) and average gives 3,
    so only mode resampling yields an all-forest first overview.
    """
    labels = np.ones((1, height, width), np.uint8)
    labels[0, 0::2, 0::2] = 9
    return labels


@pytest.fixture(scope="module")
def big_cog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, np.ndarray]]:
    folder = tmp_path_factory.mktemp("cog")
    labels = majority_pattern(1500, 2000)
    confidence = np.full((1, 1500, 2000), 200, np.uint8)
    data = np.concatenate([labels, confidence])
    data[:, :10, :] = NODATA_LABEL
    path = write_labels(folder / "labels.tif", data, tags={"GEOSEG_MODEL": "unet-test"})
    yield path, data


def test_output_is_a_tiled_deflate_cog_with_overviews(big_cog: tuple[Path, np.ndarray]) -> None:
    path, _ = big_cog
    with rasterio.open(path) as src:
        profile = src.profile
        assert profile["driver"] == "GTiff"
        assert profile["tiled"] is True
        assert profile["compress"] == "deflate"
        assert (profile["blockxsize"], profile["blockysize"]) == (512, 512)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.overviews(1) == [2, 4]
        assert src.overviews(2) == [2, 4]


def test_values_and_georeferencing_are_kept(big_cog: tuple[Path, np.ndarray]) -> None:
    path, data = big_cog
    with rasterio.open(path) as src:
        assert (src.count, src.height, src.width) == (2, 1500, 2000)
        assert src.dtypes == ("uint8", "uint8")
        assert src.crs == UTM33
        assert src.transform == TRANSFORM
        assert src.nodata == NODATA_LABEL
        np.testing.assert_array_equal(src.read(), data)


def test_colour_table_descriptions_and_tags(big_cog: tuple[Path, np.ndarray]) -> None:
    path, _ = big_cog
    with rasterio.open(path) as src:
        colormap = src.colormap(1)
        assert colormap[1] == (51, 160, 44, 255)
        assert colormap[4] == (31, 120, 180, 255)
        assert colormap[9] == (227, 26, 28, 255)
        assert colormap[NODATA_LABEL] == (0, 0, 0, 0)
        assert src.descriptions == ("class", "confidence")
        # confidence is a value band, not transparency
        assert src.colorinterp == (ColorInterp.palette, ColorInterp.undefined)
        tags = src.tags()
        assert tags["GEOSEG_MODEL"] == "unet-test"
        assert json.loads(tags[CLASSES_TAG])[2] == {
            "id": 9,
            "name": "building",
            "colour": [227, 26, 28],
            "is_thing": True,
        }
    assert read_class_schema(path) == SCHEMA


def test_overviews_use_mode_resampling(big_cog: tuple[Path, np.ndarray]) -> None:
    path, _ = big_cog
    with rasterio.open(path, overview_level=0) as ovr:
        assert ovr.shape == (750, 1000)
        first = ovr.read(1)
    # The top 10 rows are nodata: 5 overview rows.
    assert (first[:5] == NODATA_LABEL).all()
    np.testing.assert_array_equal(np.unique(first[5:]), [1])
    with rasterio.open(path) as src:
        decimated = src.read(1, out_shape=(375, 500))  # served from the 4x overview
    np.testing.assert_array_equal(np.unique(decimated[3:]), [1])


def test_read_class_schema_of_a_plain_tif_is_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", height=4, width=4, count=1, dtype="uint8") as d:
        d.write(np.zeros((1, 4, 4), np.uint8))
    assert read_class_schema(path) is None


def test_small_raster_is_written_too(tmp_path: Path) -> None:
    data = np.arange(48, dtype=np.uint8).reshape(1, 6, 8) % 3
    path = write_labels(tmp_path / "small.tif", data, block=4)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), data)
    assert sorted(os.listdir(tmp_path)) == ["small.tif"]


# --- failures leave nothing behind ---------------------------------------------------


def test_all_nodata_is_refused_without_output_or_temporaries(tmp_path: Path) -> None:
    data = np.full((1, 600, 700), NODATA_LABEL, np.uint8)

    with pytest.raises(InvalidRasterError, match="nodata") as info:
        write_labels(tmp_path / "out.tif", data)

    assert isinstance(info.value, ValueError)
    assert os.listdir(tmp_path) == []


def test_confidence_alone_does_not_count_as_valid(tmp_path: Path) -> None:
    data = np.full((2, 64, 64), NODATA_LABEL, np.uint8)
    data[1] = 100  # confidence without labels
    with pytest.raises(InvalidRasterError):
        write_labels(tmp_path / "out.tif", data)
    assert os.listdir(tmp_path) == []


def test_exception_inside_the_block_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    meta = LabelMeta(UTM33, TRANSFORM, SCHEMA, ("class",))
    with (
        pytest.raises(RuntimeError, match="worker died"),
        label_cog_writer(out, meta, height=64, width=64) as sink,
    ):
        sink[(slice(0, 1), slice(0, 32), slice(0, 64))] = np.ones((1, 32, 64), np.uint8)
        raise RuntimeError("worker died")
    assert os.listdir(tmp_path) == []


def test_existing_output_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")

    with pytest.raises(OutputExistsError, match="overwrite") as info:
        write_labels(out, np.ones((1, 16, 16), np.uint8))

    assert isinstance(info.value, FileExistsError)
    assert out.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.tif"]


def test_failed_overwrite_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")

    with pytest.raises(InvalidRasterError):
        write_labels(out, np.full((1, 16, 16), NODATA_LABEL, np.uint8), overwrite=True)

    assert out.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.tif"]


def test_overwrite_replaces_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")
    data = np.full((1, 16, 16), 4, np.uint8)

    write_labels(out, data, overwrite=True)

    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), data)
    assert os.listdir(tmp_path) == ["out.tif"]


def test_missing_output_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match="does not exist"):
        write_labels(tmp_path / "no" / "out.tif", np.ones((1, 16, 16), np.uint8))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_output_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        out = write_labels(tmp_path / "out.tif", np.ones((1, 16, 16), np.uint8))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == mode
