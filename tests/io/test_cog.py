"""Label COGs assembled from tiles compressed in chunk tasks (geoseg/io/cog.py, io/tiff.py).

The reference is GDAL: the same labels written through :func:`label_cog_writer`
(GDAL's COG driver) must read back with the same pixels, georeferencing, colour
table, descriptions and tags; GDAL must recognise the file as a COG; overviews
are checked against a plain-Python mode.
"""

from __future__ import annotations

import io
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import InvalidRasterError, OutputExistsError
from geoseg.io import tiff
from geoseg.io.cog import CogGrid, chunk_fits, cog_tile_size, encode_chunk, mode_halve
from geoseg.io.labels import label_cog_from_chunks, read_class_schema
from geoseg.types import NODATA_LABEL
from tests.io.test_labels import SCHEMA, TRANSFORM, UTM33, majority_pattern, write_labels


def write_chunked(
    path: Path, data: np.ndarray, chunk: int, smallest: int = 512, **kwargs: Any
) -> Path:
    """Encode ``(B, H, W) uint8`` chunk by chunk, as predict's tasks do, and assemble.

    Chunks below predict's smallest tile (128 px) are their own tile, to keep tests small.
    """
    bands, height, width = data.shape
    tile = cog_tile_size(chunk) or chunk
    grid = CogGrid(height, width, bands, chunk, tile, smallest)
    records = {}
    for y0 in range(0, height, chunk):
        for x0 in range(0, width, chunk):
            block = data[:, y0 : y0 + chunk, x0 : x0 + chunk]
            records[y0, x0] = encode_chunk(grid, block)
            assert chunk_fits(grid, records[y0, x0], block.shape)
    options: dict[str, Any] = {
        "crs": UTM33, "transform": TRANSFORM, "schema": SCHEMA,
        "descriptions": ("class", "confidence")[:bands],
    }  # fmt: skip
    options.update(kwargs)
    label_cog_from_chunks(path, grid, lambda y, x: records[y, x], **options)
    return path


def naive_mode(level: np.ndarray) -> np.ndarray:
    """Mode of every 2 x 2 block, nodata ignored, ties to the smaller value (plain Python)."""
    b, h, w = level.shape
    out = np.empty((b, (h + 1) // 2, (w + 1) // 2), np.uint8)
    for k in range(b):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                votes = [int(v) for v in level[k, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].ravel()]
                counts = Counter(v for v in votes if v != NODATA_LABEL)
                if not counts:
                    out[k, i, j] = NODATA_LABEL
                else:
                    out[k, i, j] = min(counts, key=lambda v: (-counts[v], v))
    return out


def levels_of(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        out = [src.read()]
        n = len(src.overviews(1))
    for level in range(n):
        with rasterio.open(path, overview_level=level) as src:
            out.append(src.read())
    return out


def labels_with_noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(2, H, W)``: blocky classes 1/4/9 with salt, noisy confidence, a nodata corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    labels = np.array([1, 4, 9], np.uint8)[(yy // 13 + xx // 29) % 3]
    salt = rng.random((height, width)) < 0.2
    labels[salt] = rng.choice(np.array([1, 4, 9], np.uint8), int(salt.sum()))
    confidence = rng.integers(0, 255, (height, width), dtype=np.uint8)
    data = np.stack([labels, confidence])
    data[:, : height // 7, : width // 5] = NODATA_LABEL
    return data


@pytest.mark.parametrize("shape", [(1, 6, 8), (2, 7, 9), (1, 1, 1), (2, 33, 18)])
def test_mode_halve_equals_plain_python(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    level = rng.choice(np.array([0, 3, 7, NODATA_LABEL], np.uint8), size=shape)
    np.testing.assert_array_equal(mode_halve(level), naive_mode(level))


def test_mode_halve_keeps_the_majority_class() -> None:
    # three forest pixels and one building in every 2 x 2 cell -> all forest
    np.testing.assert_array_equal(np.unique(mode_halve(majority_pattern(8, 10))), [1])


@pytest.mark.parametrize(
    ("chunk", "tile"), [(2112, 528), (1536, 512), (960, 480), (192, 192), (1000, None), (8, None)]
)
def test_tile_side_divides_the_chunk_nearest_512(chunk: int, tile: int | None) -> None:
    assert cog_tile_size(chunk) == tile


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """The same labels through GDAL's COG driver and through the chunk tasks."""
    folder = tmp_path_factory.mktemp("cog")
    data = labels_with_noise(300, 410)
    gdal = write_labels(folder / "gdal.tif", data, tags={"GEOSEG_MODEL": "unet-test"})
    ours = write_chunked(
        folder / "ours.tif", data, 96, smallest=64, tags={"GEOSEG_MODEL": "unet-test"}
    )
    return gdal, ours, data


def test_pixels_and_metadata_match_gdals_cog(chunked: tuple[Path, Path, np.ndarray]) -> None:
    gdal, ours, data = chunked
    with rasterio.open(gdal) as ref, rasterio.open(ours) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert (src.crs, src.transform, src.nodata) == (ref.crs, ref.transform, ref.nodata)
        assert src.dtypes == ref.dtypes
        assert src.descriptions == ref.descriptions == ("class", "confidence")
        assert src.tags() == ref.tags()
        assert src.colormap(1) == ref.colormap(1)
        assert src.profile["compress"] == "deflate"
        assert src.block_shapes == [(96, 96), (96, 96)]
        # the confidence band is a plain value band, not transparency
        assert src.colorinterp[1] == rasterio.enums.ColorInterp.undefined
    assert read_class_schema(ours) == SCHEMA


def test_gdal_reads_it_as_a_cog_with_its_layout(chunked: tuple[Path, Path, np.ndarray]) -> None:
    _, ours, _ = chunked
    with rasterio.open(ours) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) == [2, 4, 8]
    raw = ours.read_bytes()
    ifds = [tiff.read_ifd(raw, i) for i in range(4)]
    ends = []
    for entries in ifds:
        offsets, sizes = tiff.entry_values(entries[324]), tiff.entry_values(entries[325])
        for at, size in zip(offsets, sizes, strict=True):
            leader = struct.unpack_from("<I", raw, at - 4)[0]
            assert leader == size
            assert raw[at + size : at + size + 4] == raw[at + size - 4 : at + size]
        ends.append((min(offsets), max(o + s for o, s in zip(offsets, sizes, strict=True))))
    first_ifd = struct.unpack_from("<I", raw, 4)[0]
    assert first_ifd < 300  # IFDs first, behind the ghost header
    # data of the smallest overview first, full resolution last, up to the end of the file
    for smaller, larger in zip(ends[::-1], ends[-2::-1], strict=False):
        assert smaller[1] + 4 <= larger[0]
    assert ends[0][1] + 4 == len(raw)


def test_overviews_are_the_cascaded_mode(chunked: tuple[Path, Path, np.ndarray]) -> None:
    _, ours, data = chunked
    levels = levels_of(ours)
    expected = data
    for got in levels[1:]:
        expected = naive_mode(expected)
        np.testing.assert_array_equal(got, expected)
    assert levels[-1].shape[1:] == (38, 52)


def test_pixels_of_every_level_do_not_depend_on_the_chunking(tmp_path: Path) -> None:
    data = labels_with_noise(257, 390, seed=3)
    outs = [write_chunked(tmp_path / f"c{c}.tif", data, c, smallest=40) for c in (32, 64, 128, 512)]
    reference = levels_of(outs[0])
    assert len(reference) == 5
    for out in outs[1:]:
        for got, want in zip(levels_of(out), reference, strict=True):
            np.testing.assert_array_equal(got, want)
    again = write_chunked(tmp_path / "again.tif", data, 64, smallest=40)
    assert again.read_bytes() == outs[1].read_bytes()


def test_rotated_transform_and_other_crs_are_kept(tmp_path: Path) -> None:
    rotated = Affine.rotation(20) @ Affine(2.0, 0.0, 1000.0, 0.0, -2.0, 9000.0)
    crs = CRS.from_epsg(3035)
    out = write_chunked(
        tmp_path / "r.tif", labels_with_noise(50, 70)[:1], 32, crs=crs, transform=rotated
    )
    with rasterio.open(out) as src:
        assert src.crs == crs
        assert src.transform.almost_equals(rotated)


def test_bigtiff_when_offsets_would_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiff, "CLASSIC_LIMIT", 1000)
    data = labels_with_noise(130, 100)
    out = write_chunked(tmp_path / "big.tif", data, 64, smallest=40)
    assert out.read_bytes()[2] == 43  # BigTIFF magic
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    levels = levels_of(out)
    assert len(levels) == 3
    for got, want in zip(
        levels, [data, naive_mode(data), naive_mode(naive_mode(data))], strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_all_nodata_is_refused_without_output(tmp_path: Path) -> None:
    data = np.full((2, 40, 40), NODATA_LABEL, np.uint8)
    data[1] = 100  # confidence without labels does not count
    with pytest.raises(InvalidRasterError, match="nodata"):
        write_chunked(tmp_path / "out.tif", data, 32, source="scene.tif")
    assert os.listdir(tmp_path) == []


def test_existing_output_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous")
    with pytest.raises(OutputExistsError):
        write_chunked(out, np.ones((1, 16, 16), np.uint8), 16)
    assert out.read_bytes() == b"previous"
    write_chunked(out, np.ones((1, 16, 16), np.uint8), 16, overwrite=True)
    with rasterio.open(out) as src:
        assert (src.read() == 1).all()


def test_a_tile_of_the_wrong_size_is_refused() -> None:
    levels = [tiff.LevelLayout(16, 16, [10])]
    with pytest.raises(ValueError, match="not the size announced"):
        tiff.write_tiff(io.BytesIO(), levels, 16, {}, [[b"x" * 11]])
