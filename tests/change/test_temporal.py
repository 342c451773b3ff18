from __future__ import annotations

import numpy as np
import pytest

from geoseg.change.temporal import persistent_after
from geoseg.errors import GeosegError


def test_flicker_is_not_change() -> None:
    # pixels: persistent change, flicker, late change, nodata at the end
    maps = np.array([[[1, 1, 1, 1]], [[9, 9, 1, 1]], [[9, 1, 1, 1]], [[9, 9, 9, 255]]], np.uint8)
    assert persistent_after(maps, 1)[0].tolist() == [9, 9, 9, 255]
    assert persistent_after(maps, 2)[0].tolist() == [9, 1, 1, 255]
    assert persistent_after(maps, 3)[0].tolist() == [9, 1, 1, 255]


def test_consistency_out_of_range() -> None:
    with pytest.raises(GeosegError, match="consistency"):
        persistent_after(np.zeros((2, 1, 1), np.uint8), 2)
