"""Label COGs assembled from tiles compressed in chunk tasks (geoseg/io/cog.py, io/tiff.py).

The reference is GDAL: the same labels written through :func:`label_cog_writer`
(GDAL's COG driver) must read back with the same pixels, georeferencing, colour
table, descriptions and tags; GDAL must recognise the file as a COG; overviews
are checked against a plain-Python mode.
"""

from __future__ import annotations

import io
import itertools
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
from geoseg.io.labels import LabelMeta, label_cog_from_chunks, read_class_schema
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
    overwrite = kwargs.pop("overwrite", False)
    options.update(kwargs)
    meta = LabelMeta(**options)
    label_cog_from_chunks(path, meta, grid, lambda y, x: records[y, x], overwrite)
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


def cog_layout_errors(raw: bytes) -> list[str]:
    """What breaks the rules of GDAL's ``validate_cloud_optimized_geotiff.py`` (full check).

    Main IFD right after the ghost header; IFDs in order, each overview smaller and
    marked reduced-resolution; tile data after the IFDs, smallest overview first,
    main image last; tiles row-major within a level; size leaders and repeated
    trailers as the ghost header promises; no overlap, nothing past the end.
    """
    errors = []
    big = raw[2] == 43
    fmt, start = ("<Q", 16) if big else ("<I", 8)
    offsets = [struct.unpack_from(fmt, raw, 8 if big else 4)[0]]
    ifds = [tiff.read_ifd(raw, 0)]
    while True:
        n = struct.unpack_from("<Q" if big else "<H", raw, offsets[-1])[0]
        nxt = struct.unpack_from(
            fmt, raw, offsets[-1] + (8 if big else 2) + n * (20 if big else 12)
        )[0]
        if not nxt:
            break
        offsets.append(nxt)
        ifds.append(tiff.read_ifd(raw, len(ifds)))
    ghost = raw[start : start + 43]
    size = int(ghost[len(b"GDAL_STRUCTURAL_METADATA_SIZE=") :][:6])
    body = raw[start + 43 : start + 43 + size]
    for promise in (b"LAYOUT=IFDS_BEFORE_DATA", b"BLOCK_ORDER=ROW_MAJOR",
                    b"BLOCK_LEADER=SIZE_AS_UINT4", b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED",
                    b"KNOWN_INCOMPATIBLE_EDITION=NO"):  # fmt: skip
        if promise not in body:
            errors.append(f"ghost header lacks {promise!r}")
    if offsets[0] != start + 43 + size + (start + 43 + size) % 2:
        errors.append(f"main IFD at {offsets[0]}")
    dims = [(tiff.entry_values(e[256])[0], tiff.entry_values(e[257])[0]) for e in ifds]
    for i in range(1, len(ifds)):
        if (
            dims[i][0] > dims[i - 1][0]
            or dims[i][1] > dims[i - 1][1]
            or offsets[i] < offsets[i - 1]
        ):
            errors.append(f"IFD {i} out of order")
        if tiff.entry_values(ifds[i][254])[0] != 1:
            errors.append(f"IFD {i} not marked reduced-resolution")
    spans, firsts = [], []
    for i, e in enumerate(ifds):
        at, sizes = tiff.entry_values(e[324]), tiff.entry_values(e[325])
        firsts.append(at[0])
        if list(at) != sorted(at):
            errors.append(f"IFD {i}: tiles not row-major")
        for o, s in zip(at, sizes, strict=True):
            if (
                struct.unpack_from("<I", raw, o - 4)[0] != s
                or raw[o + s - 4 : o + s] != raw[o + s : o + s + 4]
            ):
                errors.append(f"IFD {i}: tile at {o} lacks its leader or trailer")
            spans.append((o - 4, o + s + 4))
    if firsts != sorted(firsts, reverse=True) or min(firsts) < max(offsets):
        errors.append("tile data not after the IFDs, smallest overview first")
    spans.sort()
    if any(a[1] > b[0] for a, b in itertools.pairwise(spans)) or spans[-1][1] != len(raw):
        errors.append("tiles overlap or do not end the file")
    return errors


@pytest.mark.parametrize("bands", [1, 2])
@pytest.mark.parametrize("limit", [tiff.CLASSIC_LIMIT, 1000])
def test_the_layout_passes_gdals_cog_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bands: int, limit: int
) -> None:
    monkeypatch.setattr(tiff, "CLASSIC_LIMIT", limit)  # 1000: BigTIFF
    out = write_chunked(tmp_path / "c.tif", labels_with_noise(300, 410)[:bands], 96, smallest=64)
    raw = out.read_bytes()
    assert raw[2] == (43 if limit == 1000 else 42)
    assert cog_layout_errors(raw) == []
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) == [2, 4, 8]


def test_the_rules_catch_a_broken_layout(chunked: tuple[Path, Path, np.ndarray]) -> None:
    """The checker itself: a file with one trailer broken, and GDAL's own COG."""
    gdal, ours, _ = chunked
    raw = bytearray(ours.read_bytes())
    raw[-1] ^= 0xFF
    assert any("trailer" in e for e in cog_layout_errors(bytes(raw)))
    assert cog_layout_errors(gdal.read_bytes()) == []


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
