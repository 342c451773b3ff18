"""predict_scene end to end: tiling invariance, georeferencing, outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.io.labels import read_class_schema
from geoseg.models.runtime import load_torch_predictor
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.types import TileSpec
from tests.conftest import TINY_BANDS, TINY_SCHEMA, textured_scene, write_raster
from tests.reference import reference_labels, reference_top


def _scene(tmp_path: Path, h: int = 150, w: int = 173, **kw: object) -> tuple[Path, np.ndarray]:
    data = textured_scene(h, w)
    data[:, : h // 4, : w // 5] = 0  # nodata corner
    path = write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS, **kw)
    return path, data


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _levels(path: Path) -> list[np.ndarray]:
    """Pixels of every overview level of a COG, coarsest last."""
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
    out = []
    for level in range(n):
        with rasterio.open(path, overview_level=level) as src:
            out.append(src.read())
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_is_identical_for_any_chunking_and_equals_window_loop(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    scene, data = _scene(tmp_path, 530, 200)  # over 512 px: the COG has an overview
    stride = 64 - 2 * 8
    outs = []
    for chunk in (stride, 3 * stride, 4096):
        out = tmp_path / f"lc_{chunk}.tif"
        predict_scene(scene, str(tiny_checkpoint), out, PredictOptions(chunk=chunk, device="cpu"))
        outs.append(out)
    labels = [_read(p)[0] for p in outs]
    for got in labels[1:]:
        np.testing.assert_array_equal(got, labels[0])
    # The COG's tile side follows the chunk (a tile never straddles two chunks), so
    # the bytes differ; every overview's pixels must not. (No COG tile divides a
    # 48 px chunk: GDAL writes that file, and its overviews break ties differently.)
    pyramids = [_levels(p) for p in outs[1:]]
    assert len(pyramids[0]) == 1
    assert len(pyramids[1]) == len(pyramids[0])
    np.testing.assert_array_equal(pyramids[1][0], pyramids[0][0])
    model = load_torch_predictor(tiny_checkpoint, "cpu")
    valid = ~(data == 0).all(axis=0)
    expected = reference_labels(data, valid, TileSpec(64, 8), model, TINY_SCHEMA.ids)
    np.testing.assert_array_equal(labels[0], expected)
    assert len(np.unique(expected[valid])) > 1, "the test model should not be constant"


def test_a_chunk_no_cog_tile_divides_falls_back_to_gdal_with_the_same_pixels(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    scene, data = _scene(tmp_path)
    stride = 64 - 2 * 9  # 46 px: 3 strides (138 px) is not a multiple of 16, 8 (368 px) is
    outs = {}
    for chunk in (3 * stride, 8 * stride):
        outs[chunk] = tmp_path / f"lc_{chunk}.tif"
        opts = PredictOptions(chunk=chunk, margin=9, device="cpu", confidence=True)
        predict_scene(scene, str(tiny_checkpoint), outs[chunk], opts)
    with rasterio.open(outs[138]) as gdal, rasterio.open(outs[368]) as ours:
        assert gdal.block_shapes[0] != ours.block_shapes[0] == (368, 368)
        np.testing.assert_array_equal(gdal.read(), ours.read())
        assert gdal.tags() == ours.tags()
        assert gdal.colorinterp == ours.colorinterp  # confidence: not alpha in either
        assert gdal.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    model = load_torch_predictor(tiny_checkpoint, "cpu")
    valid = ~(data == 0).all(axis=0)
    expected = reference_labels(data, valid, TileSpec(64, 9), model, TINY_SCHEMA.ids)
    np.testing.assert_array_equal(_read(outs[138])[0], expected)


@pytest.mark.parametrize("blend", ["trim", "hann"])
def test_confidence_band_equals_the_window_loop(
    tmp_path: Path, tiny_checkpoint: Path, blend: str
) -> None:
    scene, data = _scene(tmp_path)
    out = tmp_path / "lc.tif"
    opts = PredictOptions(chunk=96, device="cpu", confidence=True, blend=blend)

    predict_scene(scene, str(tiny_checkpoint), out, opts)

    got = _read(out)
    model = load_torch_predictor(tiny_checkpoint, "cpu")
    valid = ~(data == 0).all(axis=0)
    spec = TileSpec(64, 8, blend=blend)
    labels, conf = reference_top(data, valid, spec, model, TINY_SCHEMA.ids)
    np.testing.assert_array_equal(got[0], labels)
    step = np.abs(got[1].astype(int) - conf.astype(int))
    # one step where a probability lands on a rounding edge: the reference runs one
    # window per call, predict 4, and oneDNN's float sums depend on the batch
    assert step.max() <= 1 and (step == 0).mean() > 0.999, (step > 0).sum()
    assert len(np.unique(conf[valid])) > 20  # a real spread of confidences


def test_local_cluster_gives_the_same_bytes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    scene, _ = _scene(tmp_path, 300, 250)  # 3 x 2 chunks of 144 px, COG tiles of 144 px
    a, b = tmp_path / "threads.tif", tmp_path / "cluster.tif"
    predict_scene(scene, str(tiny_checkpoint), a, PredictOptions(chunk=144, device="cpu"))
    opts = PredictOptions(chunk=144, device="cpu", scheduler="local", workers=2)
    predict_scene(scene, str(tiny_checkpoint), b, opts)
    assert _sha(a) == _sha(b)


@pytest.mark.parametrize(
    ("crs", "transform", "shape"),
    [
        ("EPSG:32633", Affine(10, 0, 500000, 0, -10, 5100000), (97, 131)),
        ("EPSG:4326", Affine(8.98e-5, 0, -0.78, 0, -8.98e-5, 38.13), (64, 64)),
        ("EPSG:3035", Affine(25, 0, 4321000, 0, -25, 3210000), (37, 53)),
    ],
)
def test_georeferencing_round_trips(
    tmp_path: Path, crs: str, transform: Affine, shape: tuple[int, int]
) -> None:
    scene, data = _scene(tmp_path, *shape, crs=crs, transform=transform)
    out = tmp_path / "lc.tif"
    predict_scene(scene, "spectral", out, PredictOptions(chunk=40, confidence=True))
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform.almost_equals(src.transform, precision=1e-12)
        assert (dst.height, dst.width) == (src.height, src.width)
        assert dst.nodata == 255 and dst.dtypes == ("uint8", "uint8")
        labels, conf = dst.read()
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    nodata = (data == 0).all(axis=0)
    assert (labels[nodata] == 255).all() and (labels[~nodata] != 255).all()
    assert (conf[nodata] == 255).all() and (conf[~nodata] <= 254).all()
    assert (conf[~nodata] >= 127).all()  # spectral confidence is at least 0.5
    assert read_class_schema(out) is not None


def test_hann_blend_runs_and_differs_only_near_window_edges(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    scene, data = _scene(tmp_path, 96, 96)
    trim, hann = tmp_path / "trim.tif", tmp_path / "hann.tif"
    predict_scene(scene, str(tiny_checkpoint), trim, PredictOptions(device="cpu"))
    predict_scene(scene, str(tiny_checkpoint), hann, PredictOptions(device="cpu", blend="hann"))
    a, b = _read(trim)[0], _read(hann)[0]
    assert ((a == 255) == (b == 255)).all()
    model = load_torch_predictor(tiny_checkpoint, "cpu")
    valid = ~(data == 0).all(axis=0)
    expected = reference_labels(data, valid, TileSpec(64, 8, blend="hann"), model, TINY_SCHEMA.ids)
    np.testing.assert_array_equal(b, expected)


def test_preview_png_is_written(tmp_path: Path) -> None:
    scene, _ = _scene(tmp_path, 60, 80)
    out, png = tmp_path / "lc.tif", tmp_path / "lc.png"
    result = predict_scene(scene, "spectral", out, PredictOptions(preview=png))
    assert result.preview == png
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (80, 60) and im.mode == "RGBA"
        assert im.getpixel((0, 0))[3] == 0  # nodata corner is transparent
