"""Findings of a new user's trial on real data: each a confident wrong answer or a
misleading message that must now be a plain warning or a one-line refusal.

Table-driven: each case builds its inputs in ``tmp_path``, runs the CLI and names
what the messages (stdout, stderr and log records together) must and must not say.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.pipelines import predict_scene
from tests.cli_cases import CliCase, run_cli_case
from tests.conftest import TINY_BANDS, textured_scene, write_raster

ROOT = Path(__file__).resolve().parents[1]
DEG = Affine(8.983152841195214e-05, 0, -5.5, 0, -8.983152841195214e-05, 40.0)


def _scene(tmp: Path, transform: Affine | None = None, crs: str = "EPSG:32633") -> Path:
    data = textured_scene(90, 110)
    return write_raster(
        tmp / "s.tif", data, nodata=0, descriptions=TINY_BANDS, transform=transform, crs=crs
    )


def _spectral_map(tmp: Path, scene: Path) -> np.ndarray:
    lc = tmp / "lc.tif"
    predict_scene(scene, "spectral", lc)
    with rasterio.open(lc) as src:
        return np.asarray(src.read(1))


def _evaluate(tmp: Path, scene: Path, labels: Path, *extra: str) -> list[str]:
    return ["evaluate", "-m", "spectral", "--image", str(scene), "--labels", str(labels),
            "-o", str(tmp / "ev"), *extra]  # fmt: skip


def _ids_of_another_legend(tmp: Path) -> list[str]:
    """A reference whose ids mean other classes (every class shifted by one), no schema."""
    scene = _scene(tmp)
    pred = _spectral_map(tmp, scene)
    ref = np.where(pred == 255, 255, (pred + 1) % 5).astype(np.uint8)
    return _evaluate(tmp, scene, write_raster(tmp / "lulc.tif", ref[None], nodata=255))


def _right_ids_no_schema(tmp: Path) -> list[str]:
    scene = _scene(tmp)
    ref = _spectral_map(tmp, scene)
    return _evaluate(tmp, scene, write_raster(tmp / "ref.tif", ref[None], nodata=255))


def _geoseg_map_as_reference(tmp: Path) -> list[str]:
    scene = _scene(tmp)
    _spectral_map(tmp, scene)
    return _evaluate(tmp, scene, tmp / "lc.tif")


def _mapped_reference(tmp: Path) -> list[str]:
    scene = _scene(tmp)
    ref = _spectral_map(tmp, scene)
    path = write_raster(tmp / "ref.tif", ref[None], nodata=255)
    return _evaluate(tmp, scene, path, "--map-reference", "0=0,1=1,2=2,3=3,4=4")


def _polygon_reference(tmp: Path) -> list[str]:
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame({"LULC_ID": [2]}, geometry=[box(500100, 5099500, 500600, 5099900)])
    frame.set_crs("EPSG:32633").to_file(tmp / "LULC.gpkg")
    return _evaluate(tmp, _scene(tmp), tmp / "LULC.gpkg", "--class-field", "LULC_ID")


def _disjoint_reference(tmp: Path) -> list[str]:
    far = Affine(10, 0, 700000, 0, -10, 5300000)
    ref = np.full((1, 90, 110), 1, np.uint8)
    return _evaluate(tmp, _scene(tmp), write_raster(tmp / "far.tif", ref, transform=far))


def _grid_a_few_ulps_off(tmp: Path) -> list[str]:
    """Pixel size 3e-19 degrees off (two tools' rounding of one grid): the same grid."""
    scene = _scene(tmp, DEG, "EPSG:4326")
    ref = _spectral_map(tmp, scene)
    off = Affine(DEG.a + 3e-19, 0, DEG.c, 0, DEG.e - 3e-19, DEG.f)
    path = write_raster(tmp / "ref.tif", ref[None], nodata=255, transform=off, crs="EPSG:4326")
    return _evaluate(tmp, scene, path, "--map-reference", "0=0,1=1,2=2,3=3,4=4")


def _checkpoint(tmp: Path, mean: tuple[float, ...] = (0.05, 0.05, 0.05, 0.3)) -> Path:
    """A tiny 4-band checkpoint (B02, B03, B04, B08) trained, it says, on ``mean`` +- 0.01."""
    import torch

    from geoseg.io.checkpoint import save_checkpoint
    from geoseg.models.registry import build_model
    from geoseg.types import ModelMeta, Normalization
    from tests.conftest import TINY_SCHEMA

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 4, len(TINY_SCHEMA))
    meta = ModelMeta(
        task="semantic", arch="unet", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization(mean, (0.01,) * 4, scale=1e-4), schema=TINY_SCHEMA,
        window=64, margin=8, gsd_m=10.0, provenance={"data": "random weights"},
    )  # fmt: skip
    return save_checkpoint(tmp / "m.safetensors", model.state_dict(), meta)


def _predict(tmp: Path, scene: Path, *extra: str) -> list[str]:
    return ["predict", str(scene), "-m", str(_checkpoint(tmp)), "-o", str(tmp / "lc.tif"),
            "--device", "cpu", *extra]  # fmt: skip


def _three_band_file(tmp: Path, *extra: str) -> list[str]:
    return _predict(tmp, write_raster(tmp / "rgb.tif", textured_scene(64, 64, bands=3)), *extra)


def _stored_b08_first(tmp: Path, names: tuple[str, ...] | None) -> list[str]:
    """Bands stored B08, B04, B03, B02 (reflectance 0.3, 0.05, 0.05, 0.05)."""
    data = np.stack([np.full((64, 64), v, np.uint16) for v in (3000, 500, 500, 500)])
    data += textured_scene(64, 64, bands=4) // 100
    return _predict(tmp, write_raster(tmp / "rev.tif", data, nodata=0, descriptions=names))


def _semantic_map_as_prediction(tmp: Path) -> list[str]:
    scene = _scene(tmp)
    ref = _spectral_map(tmp, scene)
    labels = write_raster(tmp / "ref.tif", ref[None], nodata=255)
    return ["evaluate", "--prediction", str(tmp / "lc.tif"), "--labels", str(labels),
            "-o", str(tmp / "ev")]  # fmt: skip


def _workflow_aoi_without_crs(tmp: Path) -> list[str]:
    for name, seed in (("a.tif", 0), ("b.tif", 1)):
        write_raster(tmp / name, textured_scene(48, 40, seed=seed), descriptions=TINY_BANDS)
    ring = [[500050, 5099600], [500300, 5099600], [500300, 5099900], [500050, 5099600]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
               "coordinates": [ring]}}  # fmt: skip
    (tmp / "aoi.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [feature]})
    )
    (tmp / "wf.yaml").write_text(
        "scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\naoi: aoi.geojson\n"
    )
    return ["run", str(tmp / "wf.yaml"), "--root", str(tmp)]


Case = CliCase


CASES = {
    # 1: ids of another legend scored as the model's: mIoU ~0 with exit 0 and no word
    "unschemad_ids_of_another_legend": Case(
        _ids_of_another_legend,
        0,
        (
            "lulc.tif: has no class schema",
            "taken as spectral's class ids: 0=water, 1=vegetation",
            "--map-reference",
            "label ids probably do not match spectral's classes",
            "mIoU 0.0000",
        ),
    ),
    "unschemad_right_ids": Case(
        _right_ids_no_schema,
        0,
        ("ref.tif: has no class schema", "mIoU 1.0000"),
        ("probably do not match",),
    ),
    "geoseg_map_reference": Case(
        _geoseg_map_as_reference, 0, ("mIoU 1.0000",), ("has no class schema", "do not match")
    ),
    "mapped_reference": Case(
        _mapped_reference, 0, ("mIoU 1.0000",), ("has no class schema", "do not match")
    ),
    # 5: a polygon layer was called "not a raster ... download it again"
    "polygon_reference": Case(
        _polygon_reference,
        2,
        ("LULC.gpkg: is a polygon layer", "take a label raster", "gdal_rasterize"),
        ("download it again",),
    ),
    # 6: "no pixel has both a reference class and a prediction; check the label values"
    "disjoint_reference": Case(
        _disjoint_reference, 2, ("far.tif: lies off the image",), ("check the label values",)
    ),
    # 7: "not on the grid ...; aligning it" for grids 3e-19 degrees apart
    "grid_a_few_ulps_off": Case(
        _grid_a_few_ulps_off, 0, ("mIoU 1.0000",), ("not on the grid", "aligning")
    ),
    # 3: "pick them with --bands, e.g. --bands 1,2,3", and the same again after doing so
    "too_few_bands": Case(
        _three_band_file,
        2,
        (
            "rgb.tif: the model needs 4 bands ['B02', 'B03', 'B04', 'B08']",
            "has only 3",
            "no --bands choice can feed it",
        ),
        ("e.g. --bands",),
    ),
    "too_few_bands_picked": Case(
        lambda tmp: _three_band_file(tmp, "--bands", "1,2,3"),
        2,
        ("has only 3", "no --bands choice"),
        ("e.g. --bands",),
    ),
    # 4: far outside the training statistics: band order is a cause when it was assumed
    "outside_training_unnamed_reversed": Case(
        lambda tmp: _stored_b08_first(tmp, None),
        0,
        ("standard deviations from", "band order?", "try --bands 4,3,2,1", "another sensor"),
    ),
    # 9: "the model has several thing classes" for a map without thing classes
    "semantic_map_as_prediction": Case(
        _semantic_map_as_prediction,
        2,
        ("lc.tif: a semantic map", "none is a thing class", "-m MODEL --image IMAGE"),
        ("several thing classes",),
    ),
    # 10: a workflow's AOI without a CRS was told to use --aoi-crs, an option it has not
    "workflow_aoi_without_crs": Case(
        _workflow_aoi_without_crs,
        2,
        ("aoi.geojson", "the workflow key aoi_crs: EPSG:"),
        ("--aoi-crs",),
    ),
    "outside_training_named": Case(
        lambda tmp: _stored_b08_first(tmp, TINY_BANDS),
        0,
        ("standard deviations from", "another sensor"),
        ("band order?", "--bands 4,3,2,1"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trial_case(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_cli_case(CASES[name], tmp_path, caplog)


def test_degenerate_scores_are_recorded_in_metrics_json(tmp_path: Path) -> None:
    argv = _ids_of_another_legend(tmp_path)
    assert CliRunner().invoke(cli, argv).exit_code == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["miou"] == 0.0
    assert len(report["warnings"]) == 2
    assert "has no class schema" in report["warnings"][0]
    assert "probably do not match" in report["warnings"][1]


def test_python_dash_m_geoseg_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "geoseg", "--help"], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Usage: geoseg" in out.stdout and "evaluate" in out.stdout


def test_change_polygons_are_the_mmus_patches(tmp_path: Path) -> None:
    """Item 2: with --mmu-ha X no polygon of change.gpkg is under X (polygons were cut
    4-connected while the MMU kept 8-connected patches: 411 of 537 were under 0.5 ha)."""
    import geopandas as gpd
    from scipy import ndimage

    from tests.change.helpers import write_labels

    rng = np.random.default_rng(3)
    before = np.full((80, 80), 1, np.uint8)
    after = np.where(rng.random((80, 80)) < 0.12, 4, 1).astype(np.uint8)
    after[10:15, 10:15] = 1
    for i in range(5):  # a diagonal staircase: 5 px patch 8-connected, 1 px each 4-connected
        after[10 + i, 10 + i] = 4
    a = write_labels(tmp_path / "a.tif", before)
    b = write_labels(tmp_path / "b.tif", after)
    out = tmp_path / "c"
    result = CliRunner().invoke(
        cli, ["change", str(a), str(b), "-o", str(out), "--mmu-ha", "0.035"]
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "change.tif") as src:
        codes = np.asarray(src.read(1))
    unchanged = {int(c) for c in np.unique(codes) if c != 255 and c // 3 == c % 3}
    sizes = []
    for code in set(np.unique(codes).tolist()) - unchanged - {255}:
        lab, _ = ndimage.label(codes == code, structure=np.ones((3, 3), bool))
        sizes += np.bincount(lab.ravel())[1:].tolist()
    frame = gpd.read_file(out / "change.gpkg")
    assert min(sizes) >= 4  # 10 m px: 0.035 ha = 3.5 px, so every patch left has >= 4 px
    assert len(frame) == len(sizes) > 10
    assert sorted(np.round(frame["area_m2"] / 100).astype(int)) == sorted(sizes)
    assert frame["area_ha"].min() >= 0.035
