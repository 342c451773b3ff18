"""predict_scene on a CUDA GPU (``pytest -m gpu``; skipped in CI, which has none)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.pipelines import PredictOptions, predict_scene
from tests.conftest import TINY_BANDS, textured_scene, write_raster

pytestmark = pytest.mark.gpu


def _scene(tmp_path: Path) -> Path:
    data = textured_scene(700, 650)
    data[:, :100, :120] = 0  # nodata corner
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS)


def _run(scene: Path, ckpt: Path, out: Path, **kw: object) -> np.ndarray:
    predict_scene(scene, str(ckpt), out, PredictOptions(confidence=True, chunk=96, **kw))
    with rasterio.open(out) as src:
        return src.read()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_gpu_map_matches_the_cpu_map(tmp_path: Path, tiny_checkpoint: Path, precision: str) -> None:
    scene = _scene(tmp_path)
    cpu = _run(scene, tiny_checkpoint, tmp_path / "cpu.tif", device="cpu")

    gpu = _run(scene, tiny_checkpoint, tmp_path / "gpu.tif", device="cuda", precision=precision)

    np.testing.assert_array_equal(gpu[0] == 255, cpu[0] == 255)  # same nodata
    agree = (gpu[0] == cpu[0]).mean()
    assert agree > {"fp32": 0.999, "fp16": 0.99, "bf16": 0.97}[precision]
    close = np.abs(gpu[1].astype(int) - cpu[1].astype(int))[cpu[0] != 255]
    assert np.percentile(close, 99) <= {"fp32": 1, "fp16": 2, "bf16": 8}[precision]


def _levels(path: Path) -> list[np.ndarray]:
    """Pixels of every overview level of a COG (level 0 = full resolution), coarsest last."""
    with rasterio.open(path) as src:
        levels = [src.read()]
        n = len(src.overviews(1))
    for level in range(n):
        with rasterio.open(path, overview_level=level) as src:
            levels.append(src.read())
    return levels


@pytest.mark.parametrize(
    "runs",
    [
        [(96, 1, 4), (96, 8, 4)],
        # chunks a COG tile divides (144, 384, 4080 px): the same overviews as well
        [(144, 4, 4), (384, 4, 4), (4096, 4, 4)],
        [(384, None, None), (384, 3, None), (768, 2, None)],  # GPU default: batches of 32
    ],
    ids=["workers", "chunking", "default-batch"],
)
def test_gpu_output_is_the_same_at_every_level_and_byte_identical_per_chunk(
    tmp_path: Path, tiny_checkpoint: Path, runs: list[tuple[int, int | None, int | None]]
) -> None:
    """Every run has the same pixels at every overview level; runs with the same
    chunk have the same bytes (the COG tile side follows the chunk, so only those can)."""
    scene = _scene(tmp_path)
    outs: dict[int, list[Path]] = {}
    for i, (chunk, workers, batch) in enumerate(runs):
        out = tmp_path / f"gpu{i}.tif"
        opts = PredictOptions(chunk=chunk, workers=workers, batch_size=batch, device="cuda")
        predict_scene(scene, str(tiny_checkpoint), out, opts)
        outs.setdefault(chunk, []).append(out)
    paths = [p for same in outs.values() for p in same]
    first = _levels(paths[0])
    assert len(first) > 1, "the scene should have an overview"
    assert len(np.unique(first[0][0])) > 2, "the map should not be constant"
    for path in paths[1:]:
        got = _levels(path)
        assert len(got) == len(first), path.name
        for level, (a, b) in enumerate(zip(got, first, strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"{path.name} level {level}")
    for same in outs.values():
        assert len({_sha(p) for p in same}) == 1


def test_one_worker_per_gpu_gives_the_same_bytes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """``--gpus N`` = ``scheduler="cuda"``: a dask-cuda LocalCUDACluster, one worker per GPU."""
    pytest.importorskip("dask_cuda")
    scene = _scene(tmp_path)
    ref, out = tmp_path / "threads.tif", tmp_path / "cuda_cluster.tif"
    predict_scene(scene, str(tiny_checkpoint), ref, PredictOptions(chunk=96, device="cuda"))
    gpus = torch.cuda.device_count()
    opts = PredictOptions(chunk=96, device="cuda", scheduler="cuda", workers=gpus)

    predict_scene(scene, str(tiny_checkpoint), out, opts)

    assert _sha(out) == _sha(ref)
