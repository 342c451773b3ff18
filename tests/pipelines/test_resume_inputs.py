"""A resumed predict refuses, naming the file, when an input changed since the interruption:
other contents behind a restored time stamp, or a VRT's re-exported source."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.parts import parts_folder
from geoseg.pipelines import PredictOptions, predict_scene
from tests.conftest import TINY_BANDS, textured_scene, write_raster
from tests.pipelines.test_resume import _interrupt_after


def _interrupted(scene: Path, ckpt: Path, out: Path) -> None:
    """A predict of ``scene`` stopped at 3/4 of its tasks; its finished chunks stay in the
    parts folder."""
    opts = PredictOptions(chunk=48, device="cpu", scheduler="sync")
    totals: list[int] = []
    count = lambda done, total: totals.append(total)  # noqa: E731
    predict_scene(scene, str(ckpt), out.with_name("count.tif"), opts, count)  # type: ignore[arg-type]
    out.with_name("count.tif").unlink()
    with pytest.raises(KeyboardInterrupt):
        stop = _interrupt_after(max(totals) * 3 // 4)
        predict_scene(scene, str(ckpt), out, opts, stop)  # type: ignore[arg-type]
    assert list(parts_folder(out).glob("*.npz"))


def _replace_keeping_stamp(path: Path, data: np.ndarray) -> None:
    """Write ``data`` over ``path`` (same shape and dtype: same size) and put back its mtime."""
    st = path.stat()
    write_raster(path, data, nodata=0, descriptions=TINY_BANDS)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_other_contents_with_the_same_size_and_mtime_are_refused(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    scene = write_raster(
        tmp_path / "s.tif", textured_scene(150, 173), nodata=0, descriptions=TINY_BANDS
    )
    out = tmp_path / "out.tif"
    _interrupted(scene, tiny_checkpoint, out)
    _replace_keeping_stamp(scene, textured_scene(150, 173, seed=1))
    code = CliRunner().invoke(
        cli, ["predict", str(scene), "-m", str(tiny_checkpoint), "-o", str(out),
              "--chunk", "48", "--device", "cpu", "--resume"],
    )  # fmt: skip
    assert code.exit_code == 2, code.output
    assert f"{scene} changed since the unfinished run" in " ".join(code.output.split())
    assert not out.exists() and list(parts_folder(out).glob("*.npz"))


def test_a_vrt_whose_source_was_re_exported_is_refused(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    source = write_raster(
        tmp_path / "src.tif", textured_scene(150, 173), nodata=0, descriptions=TINY_BANDS
    )
    vrt = tmp_path / "s.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i}"><Description>{name}</Description>'
        f"<NoDataValue>0</NoDataValue><SimpleSource>"
        f'<SourceFilename relativeToVRT="1">{source.name}</SourceFilename>'
        f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, name in enumerate(TINY_BANDS, start=1)
    )
    vrt.write_text(
        '<VRTDataset rasterXSize="173" rasterYSize="150"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 10, 0, 5100000, 0, -10</GeoTransform>{bands}</VRTDataset>"
    )
    out = tmp_path / "out.tif"
    _interrupted(vrt, tiny_checkpoint, out)
    manifest = json.loads((parts_folder(out) / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(
        [str(source), str(vrt), str(tiny_checkpoint.resolve())]
    )
    write_raster(source, textured_scene(150, 173, seed=1), nodata=0, descriptions=TINY_BANDS)
    resumed = PredictOptions(chunk=48, device="cpu", scheduler="sync", resume=True)
    with pytest.raises(GeosegError, match=f"{source} changed since the unfinished run"):
        predict_scene(vrt, str(tiny_checkpoint), out, resumed)
    # unchanged, it resumes: the stamp of an untouched VRT and source is stable
    fresh = PredictOptions(chunk=48, device="cpu", scheduler="sync")
    _interrupted(vrt, tiny_checkpoint, tmp_path / "again.tif")
    predict_scene(vrt, str(tiny_checkpoint), tmp_path / "again.tif", resumed)
    predict_scene(vrt, str(tiny_checkpoint), tmp_path / "clean.tif", fresh)
    again = (tmp_path / "again.tif").read_bytes()
    assert again == (tmp_path / "clean.tif").read_bytes()


def test_an_old_manifest_is_refused_as_other_inputs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A parts folder from before content digests ([size, mtime_ns] under input_stamp)."""
    scene = write_raster(
        tmp_path / "s.tif", textured_scene(150, 173), nodata=0, descriptions=TINY_BANDS
    )
    out = tmp_path / "out.tif"
    _interrupted(scene, tiny_checkpoint, out)
    manifest = parts_folder(out) / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["files"]
    st = scene.stat()
    old["input_stamp"] = [st.st_size, st.st_mtime_ns]
    manifest.write_text(json.dumps(old))
    resumed = PredictOptions(chunk=48, device="cpu", scheduler="sync", resume=True)
    with pytest.raises(
        GeosegError, match="used other inputs or options; run again without --resume"
    ):
        predict_scene(scene, str(tiny_checkpoint), out, resumed)
