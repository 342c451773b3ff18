"""Reading prompt windows a group ahead in a thread: the same pixels, in the same order."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

import geoseg.pipelines.prompt_windows as prompt_windows
from geoseg.pipelines.prompt_windows import PromptWindow, read_groups, read_window
from tests.conftest import textured_scene, write_raster

S = 64
#: Inside, on the scene's edge (a boundless read) and decimated by 2 (level 1).
WINDOWS = [
    PromptWindow(0, 0, 0, S), PromptWindow(0, 96, 160, S), PromptWindow(0, -16, 180, S),
    PromptWindow(1, 32, 32, 2 * S), PromptWindow(0, 150, 10, S),
]  # fmt: skip


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = textured_scene(200, 220, 3)
    data[:, :20, :30] = 0  # nodata: the validity masks differ between windows
    return write_raster(tmp_path / "scene.tif", data, nodata=0)


def _groups() -> list[list[PromptWindow]]:
    return [WINDOWS[:2], WINDOWS[2:4], WINDOWS[4:]]


def test_groups_hold_the_pixels_of_window_by_window_reads_in_order(scene: Path) -> None:
    with rasterio.open(scene) as src:
        alone = [read_window(src, [3, 1], w, S) for w in WINDOWS]
        got = [pair for group in read_groups(src, [3, 1], _groups(), S) for pair in group]
    assert len(got) == len(WINDOWS)
    for (data, valid), (want_data, want_valid) in zip(got, alone, strict=True):
        np.testing.assert_array_equal(data, want_data)
        np.testing.assert_array_equal(valid, want_valid)
    assert not alone[0][1].all() and alone[3][1].all()  # the masks are not all alike
    with rasterio.open(scene) as src:
        assert list(read_groups(src, [1], [], S)) == []


def test_the_next_group_is_read_in_a_thread_while_the_caller_holds_one(
    scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = prompt_windows.read_window
    log: list[tuple[str, PromptWindow]] = []

    def spy(src: Any, bands: Any, window: PromptWindow, size: int) -> Any:
        log.append((threading.current_thread().name, window))
        return real(src, bands, window, size)

    monkeypatch.setattr(prompt_windows, "read_window", spy)
    with rasterio.open(scene) as src:
        reads = read_groups(src, [1, 2, 3], _groups(), S)
        next(reads)
        # the second group is on its way before the caller asks for it ...
        for _ in range(200):
            if len(log) == 4:
                break
            threading.Event().wait(0.01)
        assert [w for _, w in log] == WINDOWS[:4]
        assert all(name.startswith("geoseg-read") for name, _ in log)
        reads.close()  # ... and closing stops the reads: the third group is never read
    assert [w for _, w in log] == WINDOWS[:4]


def test_a_failed_read_is_raised_at_its_group(scene: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = prompt_windows.read_window

    def failing(src: Any, bands: Any, window: PromptWindow, size: int) -> Any:
        if window == WINDOWS[3]:
            raise rasterio.errors.RasterioIOError("damaged block")
        return real(src, bands, window, size)

    monkeypatch.setattr(prompt_windows, "read_window", failing)
    with rasterio.open(scene) as src:
        reads = read_groups(src, [1], _groups(), S)
        assert len(next(reads)) == 2
        with pytest.raises(rasterio.errors.RasterioIOError, match="damaged block"):
            next(reads)


def test_after_first_runs_on_the_reading_thread_after_the_first_group(
    scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook (the scale check's sample) runs on the reader thread once the first group
    is read, so the encoder starts on that group meanwhile; its error surfaces when the
    second group is asked for (or at the end when there is one group)."""
    real = prompt_windows.read_window
    log: list[tuple[str, object]] = []

    def spy(src: Any, bands: Any, window: PromptWindow, size: int) -> Any:
        log.append((threading.current_thread().name, window))
        return real(src, bands, window, size)

    def hook() -> None:
        log.append((threading.current_thread().name, "hook"))

    monkeypatch.setattr(prompt_windows, "read_window", spy)
    with rasterio.open(scene) as src:
        assert len(list(read_groups(src, [1], _groups(), S, hook))) == 3
        assert [what for _, what in log] == [*WINDOWS[:2], "hook", *WINDOWS[2:]]
        assert all(name.startswith("geoseg-read") for name, _ in log)
        log.clear()
        assert list(read_groups(src, [1], [], S, hook)) == []  # no window: it still runs
        assert [what for _, what in log] == ["hook"]

        def failing() -> None:
            raise ValueError("sample failed")

        reads = read_groups(src, [1], _groups(), S, failing)
        assert len(next(reads)) == 2  # the first group is already read
        with pytest.raises(ValueError, match="sample failed"):
            next(reads)
        one = read_groups(src, [1], _groups()[:1], S, failing)
        assert len(next(one)) == 2
        with pytest.raises(ValueError, match="sample failed"):
            next(one)
