"""A new user's trial: pixel sizes, missing folders, the minimum area, vector formats,
images without georeferencing and references that cover part of the scene.

Table-driven: each case builds its inputs in ``tmp_path`` and returns the command
line; the case names the exit code, what the messages (output and log records) must
and must not say, and files that must not exist afterwards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from pyproj import Geod

from geoseg.cli import cli
from geoseg.errors import GsdMismatchError
from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.registry import build_model
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.resolution import scene_gsd_m
from tests.cli_cases import CliCase, run_cli_case
from tests.conftest import (
    TINY_BANDS,
    TINY_SCHEMA,
    make_instance_checkpoint,
    make_tiny_checkpoint,
    textured_scene,
    write_raster,
)

UTM = "EPSG:32633"


def _scene(tmp: Path, pixel_m: float = 10.0, name: str = "s.tif") -> Path:
    """A 70 x 80 px 4-band scene (TINY_BANDS) at ``pixel_m`` metres in UTM 33N."""
    t = Affine(pixel_m, 0, 500000, 0, -pixel_m, 5100000)
    return write_raster(tmp / name, textured_scene(70, 80), transform=t, descriptions=TINY_BANDS)


def _ckpt(tmp: Path) -> Path:
    return make_tiny_checkpoint(tmp / "m.safetensors")


def _predict(pixel_m: float, *extra: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        scene = _scene(tmp, pixel_m)
        return ["predict", str(scene), "-m", str(_ckpt(tmp)), "-o", str(tmp / "lc.tif"), *extra]

    return build


def _no_gsd_model(tmp: Path) -> list[str]:
    """A checkpoint that records no GSD: never checked, whatever the scene's pixels."""
    from geoseg.types import ModelMeta, Normalization

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", len(TINY_BANDS), len(TINY_SCHEMA))
    meta = ModelMeta(
        task="semantic", arch="unet", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=TINY_SCHEMA,
        window=64, margin=8, gsd_m=None,
    )  # fmt: skip
    ckpt = save_checkpoint(tmp / "nogsd.safetensors", model.state_dict(), meta)
    return ["predict", str(_scene(tmp, 300.0)), "-m", str(ckpt), "-o", str(tmp / "lc.tif")]


def _geographic_far(tmp: Path) -> list[str]:
    """0.0009 degree pixels at 46 N: about 70 x 100 m (83.5 m), 8.4x the model's 10 m."""
    t = Affine(0.0009, 0, 14.5, 0, -0.0009, 46.0)
    scene = write_raster(
        tmp / "g.tif", textured_scene(70, 80), crs="EPSG:4326", transform=t,
        descriptions=TINY_BANDS,
    )  # fmt: skip
    return ["predict", str(scene), "-m", str(_ckpt(tmp)), "-o", str(tmp / "lc.tif")]


#: An older checkpoint's GSD, recorded in degrees (EPSG:4326 training): 1e-4 degrees,
#: 7.12 m measured geodesically at 66 N (11.1 m at the equator's 111 km per degree).
DEG = 1e-4
#: UTM 33N metres of 15 E, 66 N: where the projected scenes below are centred.
N66 = 7319910.0


def _degree_model(tmp: Path) -> Path:
    """The tiny U-Net with its GSD recorded as :data:`DEG` degrees."""
    from geoseg.types import ModelMeta, Normalization

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", len(TINY_BANDS), len(TINY_SCHEMA))
    meta = ModelMeta(
        task="semantic", arch="unet", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=TINY_SCHEMA,
        window=64, margin=8, gsd_m=DEG,
    )  # fmt: skip
    return save_checkpoint(tmp / "deg.safetensors", model.state_dict(), meta)


def _degree_model_on(crs: str, pixel: float) -> Callable[[Path], list[str]]:
    """``predict`` with :func:`_degree_model` on a 70 x 80 px scene centred near 15 E,
    66 N, of ``pixel`` degrees (EPSG:4326) or metres (UTM 33N)."""

    def build(tmp: Path) -> list[str]:
        x0, y0 = (15.0, 66.0) if crs == "EPSG:4326" else (500000.0, N66)
        t = Affine(pixel, 0, x0 - 40 * pixel, 0, -pixel, y0 + 35 * pixel)
        scene = write_raster(tmp / "d.tif", textured_scene(70, 80), crs=crs, transform=t,
                             descriptions=TINY_BANDS)  # fmt: skip
        return ["predict", str(scene), "-m", str(_degree_model(tmp)), "-o", str(tmp / "lc.tif")]

    return build


def _feet_far(tmp: Path) -> list[str]:
    """A scene in US survey feet (EPSG:2263) of 60 m pixels: ``-tr`` in feet, not metres."""
    ft = 60 / 0.3048006096
    t = Affine(ft, 0, 1000000, 0, -ft, 200000)
    scene = write_raster(tmp / "f.tif", textured_scene(70, 80), crs="EPSG:2263", transform=t,
                         descriptions=TINY_BANDS)  # fmt: skip
    return ["predict", str(scene), "-m", str(_ckpt(tmp)), "-o", str(tmp / "lc.tif")]


def _evaluate_far(tmp: Path) -> list[str]:
    scene = _scene(tmp, 60.0)
    labels = write_raster(tmp / "ref.tif", np.ones((1, 70, 80), np.uint8),
                          transform=Affine(60, 0, 500000, 0, -60, 5100000))  # fmt: skip
    return ["evaluate", "-m", str(_ckpt(tmp)), "--image", str(scene), "--labels", str(labels),
            "-o", str(tmp / "ev")]  # fmt: skip


def _calibrate_far(tmp: Path) -> list[str]:
    scene = _scene(tmp, 60.0)
    labels = write_raster(tmp / "ref.tif", np.ones((1, 70, 80), np.uint8),
                          transform=Affine(60, 0, 500000, 0, -60, 5100000))  # fmt: skip
    return ["calibrate", "-m", str(_ckpt(tmp)), "--image", str(scene), "--labels", str(labels),
            "-o", str(tmp / "cal.safetensors")]  # fmt: skip


def _instances_far(tmp: Path) -> list[str]:
    ckpt = make_instance_checkpoint(tmp / "inst.safetensors")
    return ["predict", str(_scene(tmp, 60.0)), "-m", str(ckpt), "-o", str(tmp / "lc.tif")]


def _missing_folder(cmd: str) -> Callable[[Path], list[str]]:
    """``cmd`` writing into ``nodir/``, which does not exist."""

    def build(tmp: Path) -> list[str]:
        scene, out = _scene(tmp), tmp / "nodir"
        ckpt = str(_ckpt(tmp))
        return {
            "predict": ["predict", str(scene), "-m", "spectral", "-o", str(out / "x.tif")],
            "predict_vector": [
                "predict",
                str(scene),
                "-m",
                "spectral",
                "-o",
                str(tmp / "x.tif"),
                "--vector",
                str(out / "x.gpkg"),
            ],
            "vectorize": ["vectorize", str(_labels(tmp)), "-o", str(out / "x.gpkg")],
            "change": [
                "change",
                str(_labels(tmp)),
                str(_labels(tmp, "b.tif")),
                "-o",
                str(out / "report"),
            ],
            "calibrate": [
                "calibrate",
                "-m",
                ckpt,
                "--image",
                str(scene),
                "--labels",
                str(_labels(tmp)),
                "-o",
                str(out / "c.safetensors"),
            ],
            "prompt": [
                "prompt",
                str(scene),
                "-m",
                ckpt,
                "--point",
                "500100,5099900",
                "-o",
                str(out / "x.tif"),
            ],
        }[cmd]

    return build


def _labels(tmp: Path, name: str = "l.tif") -> Path:
    """A 70 x 80 px label raster of classes 1-3 in bands of 700 px."""
    lab = (np.arange(70 * 80).reshape(1, 70, 80) // 700 % 3 + 1).astype(np.uint8)
    return write_raster(tmp / name, lab, nodata=255)


def _format_mismatch(tmp: Path) -> list[str]:
    return ["vectorize", str(_labels(tmp)), "-o", str(tmp / "vv.gpkg"), "--format", "parquet"]


def _png(tmp: Path, *extra: str) -> list[str]:
    data = (np.random.default_rng(0).random((3, 40, 50)) * 255).astype(np.uint8)
    with rasterio.open(tmp / "a.png", "w", driver="PNG", count=3, height=40, width=50,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(data)
    shutil.move(tmp / "a.png", tmp / "a.tif")
    return ["predict", str(tmp / "a.tif"), "-m", "spectral", "-o", str(tmp / "o.tif"), *extra]


def _placed_by(kind: str, tmp: Path, *extra: str) -> list[str]:
    """A 3-band scene placed by four GCPs in UTM 33N, or by RPCs, with no geotransform."""
    from rasterio.control import GroundControlPoint
    from rasterio.rpc import RPC

    data = (np.random.default_rng(0).random((3, 40, 50)) * 255).astype(np.uint8)
    with rasterio.open(tmp / "g.tif", "w", driver="GTiff", count=3, height=40, width=50,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(data)
        if kind == "gcp":
            corners = [(0, 0), (0, 50), (40, 0), (40, 50)]
            points = [GroundControlPoint(r, c, 500000 + 10 * c, 5100000 - 10 * r)
                      for r, c in corners]  # fmt: skip
            dst.gcps = (points, rasterio.crs.CRS.from_string(UTM))
        else:
            dst.rpcs = RPC(
                height_off=0, height_scale=100, lat_off=46, lat_scale=0.01, long_off=14,
                long_scale=0.01, line_off=20, line_scale=20, samp_off=25, samp_scale=25,
                line_num_coeff=[0, 0, -1] + [0] * 17, line_den_coeff=[1] + [0] * 19,
                samp_num_coeff=[0, 1] + [0] * 18, samp_den_coeff=[1] + [0] * 19,
            )  # fmt: skip
    return ["predict", str(tmp / "g.tif"), "-m", "spectral", "-o", str(tmp / "o.tif"), *extra]


def _shifted_labels(tmp: Path) -> list[str]:
    """Labels of the scene's own classes on a grid shifted 500 m east: half of it is off."""
    scene = write_raster(tmp / "s.tif", textured_scene(100, 101), nodata=0,
                         descriptions=TINY_BANDS)  # fmt: skip
    predict_scene(scene, "spectral", tmp / "lc.tif")
    with rasterio.open(tmp / "lc.tif") as src:
        pred = src.read(1)
    write_raster(tmp / "ref.tif", pred[None], nodata=255,
                 transform=Affine(10, 0, 500500, 0, -10, 5100000))  # fmt: skip
    return ["evaluate", "-m", "spectral", "--image", str(scene), "--labels",
            str(tmp / "ref.tif"), "-o", str(tmp / "ev")]  # fmt: skip


Case = CliCase


REFUSE_GSD = ("60 m", "trained at 10 m", "6.0x coarser", "gdalwarp -tr 10 10", "--ignore-gsd")
CASES = {
    "gsd_6x_refused": Case(_predict(60.0), 2, ("s.tif", *REFUSE_GSD), absent=("lc.tif",)),
    "gsd_6x_finer_refused": Case(_predict(10 / 6), 2, ("1.67 m", "6.0x finer", "--ignore-gsd")),
    "gsd_6x_ignored_warns": Case(_predict(60.0, "--ignore-gsd"), 0, ("6.0x coarser",)),
    "gsd_2x_warns": Case(_predict(20.0), 0, ("20 m", "trained at 10 m", "2.0x coarser")),
    "gsd_same_silent": Case(_predict(12.0), 0, (), never=("trained at",)),
    "gsd_not_recorded": Case(_no_gsd_model, 0, (), never=("trained at",)),
    "gsd_geographic": Case(_geographic_far, 2, ("g.tif", "trained at 10 m", "--ignore-gsd")),
    "gsd_degrees_geographic_4.5x_refused": Case(
        _degree_model_on("EPSG:4326", 4.49 * DEG),
        2,
        (
            "d.tif",
            "0.000449 degrees",
            "trained at 0.0001 degrees",
            "4.5x coarser",
            "gdalwarp -tr 0.0001 0.0001 -r bilinear",
        ),
        never=("-t_srs", " m,"),
        absent=("lc.tif",),
    ),
    "gsd_degrees_geographic_native_silent": Case(
        _degree_model_on("EPSG:4326", DEG), 0, (), never=("trained at",)
    ),
    "gsd_degrees_projected_equivalent_silent": Case(
        _degree_model_on(UTM, 7.115), 0, (), never=("trained at",)
    ),
    "gsd_degrees_projected_4.5x_refused": Case(
        _degree_model_on(UTM, 4.49 * 7.115),
        2,
        (
            "31.9 m",
            "trained at 7.12 m (0.0001 degrees at latitude 66.0)",
            "4.5x coarser",
            "gdalwarp -tr 7.115 7.115 -r bilinear",
        ),
        absent=("lc.tif",),
    ),
    "gsd_feet_tr_in_feet": Case(
        _feet_far, 2, ("60 m", "trained at 10 m", "6.0x coarser", "gdalwarp -tr 32.81 32.81")
    ),
    "gsd_evaluate": Case(_evaluate_far, 2, REFUSE_GSD, absent=("ev/metrics.json",)),
    "gsd_calibrate": Case(_calibrate_far, 2, REFUSE_GSD, absent=("cal.safetensors",)),
    "gsd_instances": Case(_instances_far, 2, REFUSE_GSD, absent=("lc.tif",)),
    **{
        f"missing_folder_{cmd}": Case(
            _missing_folder(cmd), 2, ("nodir", "does not exist", "mkdir -p"), absent=("nodir",)
        )
        for cmd in ("predict", "predict_vector", "vectorize", "change", "calibrate", "prompt")
    },
    "format_mismatch": Case(
        _format_mismatch, 2, ("vv.gpkg", "--format parquet", "vv.parquet"), absent=("vv.gpkg",)
    ),
    "png_renamed_tif": Case(
        _png, 2, ("a.tif", "no georeferencing", "PNG"), never=("NotGeoreferenced", "north-up")
    ),
    "png_renamed_tif_assume_crs": Case(
        lambda t: _png(t, "--assume-crs", UTM),
        2,
        ("no georeferencing",),
        never=("NotGeoreferenced", "north-up", "site-packages"),
    ),
    "gcps_only": Case(
        lambda t: _placed_by("gcp", t),
        2,
        ("g.tif", "4 ground control points", "gdalwarp -t_srs EPSG:32633", "g.tif gridded.tif"),
        never=("has no CRS", "north-up", "NotGeoreferenced"),
        absent=("o.tif",),
    ),
    "gcps_only_assume_crs": Case(
        lambda t: _placed_by("gcp", t, "--assume-crs", UTM),
        2,
        ("ground control points", "--assume-crs cannot"),
        never=("north-up",),
        absent=("o.tif",),
    ),
    "rpcs_only": Case(
        lambda t: _placed_by("rpc", t),
        2,
        ("g.tif", "(RPCs)", "gdalwarp -rpc -t_srs"),
        never=("has no CRS", "north-up", "NotGeoreferenced"),
        absent=("o.tif",),
    ),
    "labels_cover_half": Case(
        _shifted_labels, 0, ("ref.tif", "labels cover 50.5%", "(5,100 of 10,100)")
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gsd_trial_case(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_cli_case(CASES[name], tmp_path, caplog)


def test_label_coverage_is_in_metrics_json(tmp_path: Path) -> None:
    assert CliRunner().invoke(cli, _shifted_labels(tmp_path)).exit_code == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["label_coverage"] == 0.505
    assert any("labels cover 50.5%" in w for w in report["warnings"])


def test_geographic_gsd_is_geodesic_at_the_centre() -> None:
    """The scene's GSD in degrees is measured on the ellipsoid at its centre (pyproj Geod)."""
    t = Affine(0.0009, 0, 14.5, 0, -0.0009, 46.0)
    lon, lat = 14.5 + 0.0009 * 40, 46.0 - 0.0009 * 35  # the centre pixel's corner
    g = Geod(ellps="WGS84")
    ew = g.inv(lon, lat, lon + 0.0009, lat)[2]
    ns = g.inv(lon, lat, lon, lat - 0.0009)[2]
    got = scene_gsd_m("EPSG:4326", t, (70, 80))
    assert got == pytest.approx(float(np.sqrt(ew * ns)), rel=1e-3)
    assert 83.3 < got < 83.8  # about 69.8 m E-W by 100.0 m N-S


def test_water_s2_degrees_compared_like_for_like() -> None:
    """The shipped water model records its GSD in degrees (EPSG:4326 training): a lon/lat
    scene 4.49x coarser is refused as 4.5x (the equator's 111 km/degree read it as 4.0x)."""
    from geoseg.io.checkpoint import read_checkpoint_meta
    from geoseg.resolution import check_scene_gsd

    meta = read_checkpoint_meta(
        Path(__file__).parents[1] / "sample_data/models/water_s2.safetensors"
    )
    assert meta.gsd_m is not None and meta.gsd_m < 0.01  # degrees
    d = 4.49 * meta.gsd_m
    t = Affine(d, 0, -1.0, 0, -d, 40.0)
    with pytest.raises(GsdMismatchError, match=r"4\.5x coarser.*-tr 8\.983e-05 8\.983e-05"):
        check_scene_gsd("s.tif", "water_s2.safetensors", meta.gsd_m, "EPSG:4326", t, (512, 512))
    native = Affine(meta.gsd_m, 0, -1.0, 0, -meta.gsd_m, 40.0)
    check_scene_gsd("s.tif", "water_s2.safetensors", meta.gsd_m, "EPSG:4326", native, (512, 512))


def test_library_predict_refuses_far_gsd(tmp_path: Path) -> None:
    """``run`` and other library callers get the same refusal (predict_scene)."""
    ckpt = _ckpt(tmp_path)
    with pytest.raises(GsdMismatchError, match="gdalwarp -tr 10 10"):
        predict_scene(_scene(tmp_path, 60.0), ckpt, tmp_path / "lc.tif")
    assert not (tmp_path / "lc.tif").exists()
    predict_scene(
        _scene(tmp_path, 60.0, "b.tif"), ckpt, tmp_path / "lc.tif",
        PredictOptions(ignore_gsd=True),
    )  # fmt: skip
    assert (tmp_path / "lc.tif").exists()


def test_min_area_holds_after_simplifying(tmp_path: Path) -> None:
    """``--min-area-ha 0.5 --simplify 10``: no written polygon under 0.5 ha, by the
    polygons' own geodesic areas (simplifying after the merge left one of 0.48 ha)."""
    import geopandas as gpd
    import shapely
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.normal(size=(120, 120)), 2.0)
    lab = (np.digitize(x, np.quantile(x, [0.33, 0.66])) + 1).astype(np.uint8)
    labels = write_raster(tmp_path / "l.tif", lab[None], nodata=255)
    out = tmp_path / "v.gpkg"
    argv = ["vectorize", str(labels), "-o", str(out), "--min-area-ha", "0.5", "--simplify", "10"]
    assert CliRunner().invoke(cli, argv).exit_code == 0
    frame = gpd.read_file(out).to_crs("EPSG:4326")
    geod = Geod(ellps="WGS84")
    # counter-clockwise shells (clockwise holes): Geod's signed ring areas then subtract
    ccw = shapely.force_2d(shapely.orient_polygons(frame.geometry.values, exterior_cw=False))
    ha = np.array([geod.geometry_area_perimeter(g)[0] for g in ccw]) / 1e4
    assert len(ha) > 20
    assert ha.min() >= 0.5, sorted(ha)[:3]
    assert np.allclose(frame["area_ha"], ha, rtol=1e-3)
