"""Hostile output places: read-only folders, a full disk, a damaged resume manifest, two runs
writing one output. Always one line, exit code 2, and nothing of the failed run left behind.

Tests run as root here, and root writes into a ``chmod``-ed folder: a read-only folder is
simulated at the two places a real one bites, ``os.access`` (the up-front check) and the
creating calls ``os.open`` / ``os.mkdir`` (the writes themselves); a full disk by raising
ENOSPC where geoseg writes, and for real with ``RLIMIT_FSIZE`` in a child process, where
GDAL fails on its own and would print its ``ERROR 1`` lines.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io import outputs as outputs_module
from geoseg.io import vectors as vectors_module
from geoseg.pipelines import change as change_module
from geoseg.pipelines import predict as predict_module
from tests.change.helpers import random_labels, write_labels
from tests.conftest import TINY_BANDS, textured_scene, write_raster

REPO = Path(__file__).resolve().parents[1]
GEOSEG = "from geoseg.cli import main; main()"


def _files(root: Path) -> set[str]:
    """Every file and folder under ``root``, hidden ones included."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _one_error(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    assert out.startswith("geoseg: error: ") and out.count("\n") == 1, out
    for word in words:
        assert word in out, out


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """``in/``: a 4-band scene and two label maps (the folder outputs must not touch)."""
    src = tmp_path / "in"
    src.mkdir()
    write_raster(src / "scene.tif", textured_scene(96, 96), descriptions=TINY_BANDS)
    write_labels(src / "a.tif", random_labels((96, 96), 1))
    write_labels(src / "b.tif", random_labels((96, 96), 2))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ok").mkdir()
    return tmp_path


def _readonly(monkeypatch: pytest.MonkeyPatch, folder: Path, writes_too: bool) -> None:
    """Make ``folder`` behave read-only: to ``os.access`` and, if asked, to file creation."""
    inside = str(folder.resolve())

    def denied(path: Any) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(inside)

    real_access, real_open, real_mkdir = os.access, os.open, os.mkdir

    def access(path: Any, mode: int, *a: Any, **k: Any) -> bool:
        if mode & os.W_OK and denied(path):
            return False
        return real_access(path, mode, *a, **k)

    def open_(path: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & os.O_CREAT and denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a, **k)

    def mkdir(path: Any, *a: Any, **k: Any) -> None:
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        real_mkdir(path, *a, **k)

    if writes_too:
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "mkdir", mkdir)
    else:
        monkeypatch.setattr(outputs_module.os, "access", access)


SCENE, A, B = "in/scene.tif", "in/a.tif", "in/b.tif"
MODEL = ("-m", "spectral", "--device", "cpu")

#: command (paths relative to the test folder) with an output in ``ro/``.
READ_ONLY: dict[str, list[str]] = {
    "predict": ["predict", SCENE, *MODEL, "-o", "ro/o.tif"],
    "predict --confidence": ["predict", SCENE, *MODEL, "--confidence", "-o", "ro/o.tif"],
    "predict --preview": ["predict", SCENE, *MODEL, "-o", "ok/o.tif", "--preview", "ro/p.png"],
    "predict --vector": ["predict", SCENE, *MODEL, "-o", "ok/o.tif", "--vector", "ro/v.gpkg"],
    "vectorize": ["vectorize", A, "-o", "ro/v.gpkg"],
    "vectorize shp": ["vectorize", A, "-o", "ro/v.shp"],
    "change": ["change", A, B, "-o", "ro/report"],
    "change new folder": ["change", A, B, "-o", "ro/sub"],
    "evaluate": ["evaluate", *MODEL, "--image", SCENE, "--labels", A, "-o", "ro/eval"],
}


@pytest.mark.parametrize("writes_too", [False, True], ids=["access check", "writes fail"])
@pytest.mark.parametrize("case", sorted(READ_ONLY))
def test_read_only_destination_is_one_line_and_leaves_nothing(
    inputs: Path, monkeypatch: pytest.MonkeyPatch, case: str, writes_too: bool
) -> None:
    if case == "change":
        (inputs / "ro" / "report").mkdir()
    monkeypatch.chdir(inputs)
    before = _files(inputs)
    _readonly(monkeypatch, inputs / "ro", writes_too)
    code, out = _run(*READ_ONLY[case])
    _one_error(code, out, str(inputs / "ro"), "cannot write there (no permission")
    assert _files(inputs) == before


def _no_space(*_: Any, **__: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _sqlite_full(*_: Any, **__: Any) -> None:
    raise pyogrio.errors.DataSourceError("failed to execute insert : database or disk is full")


#: name -> (command, what to patch (object, attribute), replacement, output named)
NO_SPACE: dict[str, tuple[list[str], tuple[Any, str], Callable[..., Any], str]] = {
    "predict COG": (["predict", SCENE, *MODEL, "-o", "ok/o.tif"],
                    (predict_module, "_write_cog"), _no_space, "ok/o.tif"),
    "predict preview": (["predict", SCENE, *MODEL, "-o", "ok/o.tif", "--preview", "ok/p.png"],
                        (predict_module, "write_label_preview"), _no_space, "ok/o.tif"),
    "vectorize gpkg": (["vectorize", A, "-o", "ok/v.gpkg"],
                       (vectors_module.pyogrio, "write_arrow"), _sqlite_full, "ok/v.gpkg"),
    "vectorize parquet": (["vectorize", A, "-o", "ok/v.parquet"],
                          (pq.ParquetWriter, "write_batch"), _no_space, "ok/v.parquet"),
    "change after change.tif": (["change", A, B, "-o", "ok/report"],
                                (change_module, "write_tables"), _no_space, "ok/report"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NO_SPACE))
def test_full_disk_is_named_and_every_output_rolled_back(
    inputs: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    args, (owner, name), fail, named = NO_SPACE[case]
    monkeypatch.chdir(inputs)
    monkeypatch.setattr(owner, name, fail)
    before = _files(inputs)
    code, out = _run(*args)
    _one_error(code, out, f"no space left on {named}")
    assert _files(inputs) == before


def _limited(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize("ext", ["gpkg", "shp", "fgb", "geojson", "parquet"])
def test_real_write_failure_in_gdal_prints_one_line(tmp_path: Path, ext: str) -> None:
    """GDAL fails for real (files may not pass 256 kB): no ``ERROR 1`` lines, no files left."""
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([1, 4, 9], np.uint8), size=(300, 300))
    write_labels(tmp_path / "a.tif", labels)
    before = _files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", GEOSEG, "vectorize", "a.tif", "-o", f"v.{ext}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=_limited(1 << 18),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    _one_error(done.returncode, done.stderr)
    assert "ERROR 1" not in done.stderr
    # Under a size limit SQLite says "disk I/O error" and FlatGeobuf loses its own temporary
    # before geoseg looks; on a full disk both are recognised (statvfs, "disk is full").
    if ext not in ("gpkg", "fgb"):
        assert done.stderr == (
            f"geoseg: error: no space left on v.{ext} (or a file grew past the size the system "
            "allows); free some space there or write the outputs to another disk\n"
        )
    assert _files(tmp_path) == before


def test_damaged_manifest_with_resume_starts_afresh(
    inputs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = inputs / "ok" / ".o.tif.parts"
    parts.mkdir()
    (parts / "manifest.json").write_bytes(b'{"input": "\xff\xfe')
    (parts / "0_0.npz").write_bytes(b"old")
    out = inputs / "ok" / "o.tif"
    code, text = _run("predict", inputs / SCENE, *MODEL, "-o", out, "--resume")
    assert code == 0, text
    assert "manifest.json: damaged" in caplog.text and "starting afresh" in caplog.text
    assert out.is_file()
    assert _files(inputs / "ok") == {"o.tif"}


def _lock(target: Path, pid: int) -> Path:
    path = target.with_name(f".{target.name}.lock")
    record = {"pid": pid, "host": socket.gethostname(), "started": "2024-05-01T10:00:00+00:00",
              "token": "other"}  # fmt: skip
    path.write_text(json.dumps(record))
    return path


#: command -> its locked output (relative to the test folder).
LOCKED: dict[str, tuple[list[str], str]] = {
    "predict": (["predict", SCENE, *MODEL, "-o", "ok/o.tif", "--overwrite"], "ok/o.tif"),
    "vectorize": (["vectorize", A, "-o", "ok/v.gpkg", "--overwrite"], "ok/v.gpkg"),
    "change": (["change", A, B, "-o", "ok/report", "--overwrite"], "ok/report"),
}


@pytest.mark.parametrize("case", sorted(LOCKED))
def test_second_run_on_one_output_is_refused(
    inputs: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    args, target = LOCKED[case]
    monkeypatch.chdir(inputs)
    other = subprocess.Popen(["sleep", "60"])
    try:
        lock = _lock(inputs / target, other.pid)
        parts = inputs / "ok" / ".o.tif.parts"
        parts.mkdir()  # the other run's chunks: a second run must not wipe them
        (parts / "manifest.json").write_text("{}")
        before = _files(inputs)
        code, out = _run(*args)
        _one_error(code, out, "another geoseg run is writing it", f"pid {other.pid}",
                   socket.gethostname(), "2024-05-01T10:00:00")  # fmt: skip
        assert _files(inputs) == before
        assert json.loads(lock.read_text())["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_lock_of_a_dead_run_is_taken_over_and_released(
    inputs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = inputs / "ok" / "o.tif"
    _lock(out, gone.pid)
    code, text = _run("predict", inputs / SCENE, *MODEL, "-o", out)
    assert code == 0, text
    assert f"taking over the lock of run {gone.pid}" in caplog.text
    assert _files(inputs / "ok") == {"o.tif"}


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_lock_is_released_when_a_run_stops(
    inputs: Path, monkeypatch: pytest.MonkeyPatch, stop: type[BaseException]
) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise stop("stop")

    monkeypatch.setattr(predict_module, "store_blocks", fail)
    code, _ = _run("predict", inputs / SCENE, *MODEL, "-o", inputs / "ok" / "o.tif")
    assert code == (130 if stop is KeyboardInterrupt else 1)
    assert not any(name.endswith(".lock") for name in _files(inputs / "ok"))


def test_two_processes_one_output(inputs: Path) -> None:
    """A real second ``geoseg`` process while the first one holds the output's lock."""
    from geoseg.io.lock import OutputLock

    target = inputs / "ok" / "o.tif"
    held = OutputLock.take(target)  # this test process is the first run
    try:
        done = subprocess.run(
            [sys.executable, "-c", GEOSEG, "predict", SCENE, *MODEL, "-o", "ok/o.tif"],
            cwd=inputs, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    finally:
        held.release()
    assert done.returncode == 2, done.stderr
    assert f"another geoseg run is writing it (pid {os.getpid()}" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert _files(inputs / "ok") == set()
