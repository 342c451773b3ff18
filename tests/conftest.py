"""Shared fixtures: small rasters in tmp_path, a tiny trained-shape checkpoint, shared data."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.instance import build_instance_model
from geoseg.models.registry import build_model
from geoseg.synthetic import write_sample_data
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, Normalization

#: Real data shared beside the repository (../shared/data); absent on some machines.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY_SCHEMA = ClassSchema(
    (
        ClassInfo(1, "forest", (0, 120, 0)),
        ClassInfo(4, "water", (0, 0, 200)),
        ClassInfo(9, "urban", (200, 0, 0)),
    )
)
TINY_BANDS = ("B02", "B03", "B04", "B08")


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    **profile: object,
) -> Path:
    """Write ``(C, H, W)`` ``data`` as a GeoTIFF and return its path."""
    count, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", count=count, height=height, width=width, dtype=data.dtype,
        crs=crs, transform=transform or Affine(10, 0, 500000, 0, -10, 5100000), nodata=nodata,
        **profile,
    ) as dst:  # fmt: skip
        dst.write(data)
        for i, d in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, d)
    return path


def textured_scene(height: int, width: int, bands: int = 4, seed: int = 0) -> np.ndarray:
    """``(bands, H, W) uint16`` smooth random reflectance x 10000 (values 300-4000)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(bands, height, width)), (0, 4, 4))
    x = (x - x.min()) / (np.ptp(x) + 1e-9)
    return (300 + x * 3700).astype(np.uint16)


def make_tiny_checkpoint(path: Path, window: int = 64, margin: int = 8) -> Path:
    """A U-Net/ResNet-18 with fixed random weights for 4 Sentinel-2 bands, 3 classes."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", len(TINY_BANDS), len(TINY_SCHEMA))
    meta = ModelMeta(
        task="semantic", arch="unet", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=TINY_SCHEMA,
        window=window, margin=margin, gsd_m=10.0, provenance={"data": "random weights"},
    )  # fmt: skip
    return save_checkpoint(path, model.state_dict(), meta)


def make_instance_checkpoint(path: Path, schema: ClassSchema = TINY_SCHEMA) -> Path:
    """An untrained U-Net/ResNet-18 with ``K + 1`` outputs (``K`` = the schema's classes),
    saved with task "instance" for the 4 :data:`TINY_BANDS`, window 64, margin 8."""
    torch.manual_seed(0)
    module = build_instance_model("unet", "resnet18", len(TINY_BANDS), len(schema))
    meta = ModelMeta(
        task="instance", arch="unet", encoder="resnet18", bands=TINY_BANDS,
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=schema,
        window=64, margin=8, gsd_m=10.0,
    )  # fmt: skip
    return save_checkpoint(path, module.state_dict(), meta)


def sample_run_folder(base: Path) -> Path:
    """``base`` laid out like the repository for workflows: a small sample scene pair in
    ``sample_data`` (160 x 192 px, seed 4), the shipped sample models and ``workflows``."""
    repo = Path(__file__).resolve().parents[1]
    write_sample_data(base / "sample_data", height=160, width=192, seed=4)
    shutil.copytree(repo / "sample_data" / "models", base / "sample_data" / "models")
    shutil.copytree(repo / "workflows", base / "workflows")
    return base


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip (with the reason) where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
