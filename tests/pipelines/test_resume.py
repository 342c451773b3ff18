"""An interrupted predict resumes from its finished chunks and ends byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.io.parts import parts_folder
from geoseg.pipelines import PredictOptions, predict_scene
from tests.conftest import TINY_BANDS, textured_scene, write_raster


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = textured_scene(150, 173)
    data[:, :30, :40] = 0
    return write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Stop(KeyboardInterrupt):
    pass


def _interrupt_after(n: int) -> object:
    def progress(done: int, total: int) -> None:
        if done >= n:
            raise _Stop

    return progress


def _count_tasks() -> tuple[list[int], object]:
    seen: list[int] = []
    return seen, lambda done, total: seen.append(total)


def _tamper(path: Path) -> None:
    """Change one byte of a chunk record's arrays, keep its stored digest and zip valid."""
    with np.load(path) as f:
        arrays = {k: f[k].copy() for k in f.files}
    name = "data" if "data" in arrays else "block"
    arrays[name].reshape(-1)[0] ^= 1
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


# chunk 48: no COG tile side of 128-1024 px divides it, so chunks keep their blocks and
# GDAL writes the COG; chunk 144: chunks keep their compressed tiles
@pytest.mark.parametrize("chunk", [48, 144])
def test_resume_after_ctrl_c_gives_the_same_bytes(
    tmp_path: Path, tiny_checkpoint: Path, chunk: int
) -> None:
    data = textured_scene(150 * chunk // 48, 173 * chunk // 48)  # 4 x 4 chunks
    data[:, :30, :40] = 0
    scene = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)
    opts = PredictOptions(chunk=chunk, device="cpu", scheduler="sync")
    clean = tmp_path / "clean.tif"
    seen_full, count = _count_tasks()
    predict_scene(scene, str(tiny_checkpoint), clean, opts, count)  # type: ignore[arg-type]
    out = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt):
        predict_scene(
            scene, str(tiny_checkpoint), out, opts, _interrupt_after(max(seen_full) * 3 // 4)
        )  # type: ignore[arg-type]
    parts = parts_folder(out)
    done = sorted(parts.glob("*.npz"))
    assert done and not out.exists()
    # finished chunks damaged on disk must be computed again, not trusted
    assert len(done) > 2
    done[0].write_bytes(done[0].read_bytes()[:50])  # truncated
    _tamper(done[1])  # one byte changed, zip and stored digest intact
    seen_resumed, count = _count_tasks()
    resumed = PredictOptions(chunk=chunk, device="cpu", scheduler="sync", resume=True)
    predict_scene(scene, str(tiny_checkpoint), out, resumed, count)  # type: ignore[arg-type]
    assert _sha(out) == _sha(clean)
    assert max(seen_resumed) < max(seen_full), "finished chunks were computed again"
    assert not parts.exists()


def test_resume_refuses_a_different_job(tmp_path: Path, scene: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "out.tif"
    opts = PredictOptions(chunk=48, device="cpu", scheduler="sync")
    with pytest.raises(KeyboardInterrupt):
        predict_scene(scene, str(tiny_checkpoint), out, opts, _interrupt_after(30))  # type: ignore[arg-type]
    other = PredictOptions(chunk=96, device="cpu", scheduler="sync", resume=True)
    with pytest.raises(GeosegError, match="without --resume"):
        predict_scene(scene, str(tiny_checkpoint), out, other)
    # a fresh run (no --resume) discards the stale chunks and succeeds
    predict_scene(scene, str(tiny_checkpoint), out, PredictOptions(chunk=96, device="cpu"))
    assert out.exists() and not parts_folder(out).exists()


def test_resume_matches_the_arithmetic_not_the_spelling(
    tmp_path: Path, scene: Path, tiny_checkpoint: Path
) -> None:
    out, clean = tmp_path / "out.tif", tmp_path / "clean.tif"
    first = PredictOptions(chunk=48, device="cpu", scheduler="sync", precision="auto")
    seen_full, count = _count_tasks()
    predict_scene(scene, str(tiny_checkpoint), clean, first, count)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        stop = _interrupt_after(max(seen_full) * 3 // 4)
        predict_scene(scene, str(tiny_checkpoint), out, first, stop)  # type: ignore[arg-type]
    bf16 = PredictOptions(chunk=48, device="cpu", scheduler="sync", precision="bf16", resume=True)
    with pytest.raises(GeosegError, match="without --resume"):  # other arithmetic: refused
        predict_scene(scene, str(tiny_checkpoint), out, bf16)
    seen, count = _count_tasks()
    fp32 = PredictOptions(chunk=48, device="cpu", scheduler="sync", precision="fp32", resume=True)
    predict_scene(scene, str(tiny_checkpoint), out, fp32, count)  # type: ignore[arg-type]
    assert _sha(out) == _sha(clean)
    assert max(seen) < max(seen_full), "auto on the CPU is fp32: its chunks were reused"


def test_a_failing_chunk_mid_run_leaves_nothing(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other chunk tasks still run when one fails; none of them may leave a file."""
    import threading
    import time

    from geoseg.tiling import infer

    data = textured_scene(512, 512)
    scene = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)
    real, calls, lock = infer._labels, [0], threading.Lock()

    def failing(*args: object, **kw: object) -> object:
        with lock:
            calls[0] += 1
            if calls[0] == 5:  # of 16 chunks of 144 px, 4 threads
                raise RuntimeError("chunk failed")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(infer, "_labels", failing)
    with pytest.raises(RuntimeError, match="chunk failed"):
        opts = PredictOptions(chunk=144, workers=4, device="cpu")
        predict_scene(scene, str(tiny_checkpoint), tmp_path / "out.tif", opts)
    time.sleep(0.5)  # tasks handed out before the failure finish meanwhile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_errors_other_than_interruption_leave_nothing(tmp_path: Path) -> None:
    data = np.zeros((4, 40, 40), np.uint16)
    scene = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=TINY_BANDS)
    out = tmp_path / "out.tif"
    with pytest.raises(GeosegError, match="nodata"):
        predict_scene(scene, "spectral", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_a_full_disk_names_the_path_and_leaves_nothing(
    tmp_path: Path, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import geoseg.io.parts

    def no_space(file: object, **arrays: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "full"))

    monkeypatch.setattr(geoseg.io.parts.np, "savez", no_space)
    out = tmp_path / "out.tif"
    with pytest.raises(GeosegError, match="no space left on") as info:
        predict_scene(scene, "spectral", out, PredictOptions(chunk=64))
    assert str(out) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
