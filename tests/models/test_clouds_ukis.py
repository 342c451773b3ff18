"""The ukis-csmask Sentinel-2 L1C cloud model, imported, on the real Slovenia patch (slow).

Needs the ``clouds`` extra (``pip install 'geoseg[clouds]'``) and ../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.io.checkpoint import read_checkpoint_meta
from geoseg.pipelines import PredictOptions, predict_scene

pytest.importorskip("ukis_csmask")
pytest.importorskip("onnxruntime")

# sample_data is not a package: load the scoring script's helpers by path.
_SCRIPT = Path(__file__).resolve().parents[2] / "sample_data" / "models" / "score_clouds_ukis.py"


def _script():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_clouds_ukis", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ukis_l1c_cloud_model_finds_the_cloudy_dates(tmp_path: Path, shared_data: Path) -> None:
    model = _script().import_ukis("4b_l1c", tmp_path / "clouds.safetensors")
    meta = read_checkpoint_meta(model)
    assert meta.bands == ("B02", "B03", "B04", "B08") and meta.window == 256
    geotiff = shared_data / "eolearn_slovenia_lulc" / "geotiff"
    cloud = {}
    for date in ("2015-08-20", "2015-09-09"):  # CLM: all cloud, all clear
        out = predict_scene(geotiff / f"s2_l1c_{date}.tif", str(model), tmp_path / f"{date}.tif",
                            PredictOptions(device="cpu"))  # fmt: skip
        with rasterio.open(out.output) as src:
            cloud[date] = float(np.mean(src.read(1) == 1))
    assert cloud["2015-08-20"] > 0.99 and cloud["2015-09-09"] < 0.01, cloud
