"""``place_mask``: SAM's window logits on the scene grid, with memory that follows the scene."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from geoseg.pipelines.prompt_objects import place_mask
from geoseg.pipelines.prompt_windows import PromptWindow


def _reference(
    logits: np.ndarray, valid: np.ndarray, window: PromptWindow, height: int, width: int
) -> tuple[int, int, np.ndarray] | None:
    """Upsample the whole window, clip it to the scene, crop (the rule, written plainly)."""
    f = window.factor
    full = np.kron((logits > 0) & valid, np.ones((f, f), bool)).astype(bool)
    rows = np.arange(window.side)[:, None] + window.row0
    cols = np.arange(window.side)[None, :] + window.col0
    full &= (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    r, c = np.nonzero(full)
    if r.size == 0:
        return None
    crop = full[r.min() : r.max() + 1, c.min() : c.max() + 1]
    return window.row0 + int(r.min()), window.col0 + int(c.min()), crop


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_placed_mask_equals_the_whole_window_rule(level: int) -> None:
    rng = np.random.default_rng(level)
    s, height, width = 16, 70, 90
    side = s << level
    for _ in range(60):
        row0 = int(rng.integers(-side, height))
        col0 = int(rng.integers(-side, width))
        logits = rng.normal(size=(s, s)) - rng.uniform(0.0, 2.5)  # sparse to full masks
        valid = rng.uniform(size=(s, s)) > 0.1
        window = PromptWindow(level, row0, col0, side)
        got = place_mask(logits, valid, window, height, width)
        want = _reference(logits, valid, window, height, width)
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert got[:2] == want[:2]
        np.testing.assert_array_equal(got[2], want[2])


def test_a_window_far_larger_than_the_scene_allocates_only_the_scene(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The repro: a box over half a degree on a 1000 px scene reads a level-8 window
    # of 262144 px; upsampled whole it is 64 GiB.
    s, level, height, width = 1024, 8, 1000, 900
    side = s << level
    window = PromptWindow(level, -side // 2, -side // 2, side)
    logits = np.ones((s, s), np.float32)  # SAM says: all of it
    valid = np.ones((s, s), bool)
    repeat = np.repeat

    def bounded_repeat(a: np.ndarray, repeats: int, axis: int) -> np.ndarray:
        size = np.asarray(a).size * repeats
        assert size <= 4 * 256 * height * width, f"np.repeat to {size} elements"
        return repeat(a, repeats, axis=axis)

    monkeypatch.setattr(np, "repeat", bounded_repeat)
    tracemalloc.start()
    try:
        placed = place_mask(logits, valid, window, height, width)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert placed is not None
    row0, col0, mask = placed
    assert (row0, col0) == (0, 0) and mask.shape == (height, width) and mask.all()
    # one decimated cell (256 x 256 native px) around the scene at most, a few copies
    assert peak < 8 * 512 * 512 * 4, peak


def test_a_window_off_the_scene_places_nothing() -> None:
    window = PromptWindow(2, 500, 500, 64)
    assert place_mask(np.ones((16, 16)), np.ones((16, 16), bool), window, 100, 100) is None
