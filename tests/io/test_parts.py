"""The per-chunk store of resumable runs (geoseg/io/parts.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg.io import parts as parts_module
from geoseg.io.parts import ChunkStore

KEY = (slice(0, 1), slice(0, 4), slice(8, 12))


def test_a_record_round_trips_and_a_changed_byte_is_caught(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "p", {"job": 1}, resume=False)
    block = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    store[KEY] = block
    np.testing.assert_array_equal(store.load(0, 8, (1, 4, 4))["block"], block)  # type: ignore[index]
    assert store.load(0, 8, (1, 4, 5)) is None  # wrong shape: computed again
    store[KEY] = block
    path = tmp_path / "p" / "0_8.npz"
    with np.load(path) as f:
        arrays = {k: f[k].copy() for k in f.files}
    arrays["block"][0, 0, 0] ^= 1
    np.savez(path, **arrays)  # the stored digest no longer matches
    assert store.load(0, 8, (1, 4, 4)) is None
    assert not path.exists()


def test_remove_waits_for_a_write_in_flight_and_drops_later_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChunkStore(tmp_path / "p", {}, resume=False)
    writing, release = threading.Event(), threading.Event()
    savez = np.savez

    def slow_savez(file: Any, **arrays: Any) -> None:
        writing.set()
        release.wait(10)
        savez(file, **arrays)

    monkeypatch.setattr(parts_module.np, "savez", slow_savez)
    block = np.ones((1, 4, 4), np.uint8)
    writer = threading.Thread(target=store.__setitem__, args=(KEY, block))
    writer.start()
    assert writing.wait(10)
    remover = threading.Thread(target=store.remove)
    remover.start()
    remover.join(0.3)
    assert remover.is_alive(), "remove() must wait for the write in flight"
    release.set()
    writer.join(10)
    remover.join(10)
    assert not remover.is_alive()
    assert not (tmp_path / "p").exists()
    store[(slice(0, 1), slice(4, 8), slice(0, 4))] = block  # a task finishing late
    assert not (tmp_path / "p").exists()
