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


def test_change_hidden_by_a_nodata_date_is_nodata_not_no_change() -> None:
    """A cloud (255) on a date --consistency needs: a change 1 -> 9 it does not refute is
    unobserved (nodata), one another date refutes stays no change, no change stays."""
    # pixels: cloud in the middle of a change; cloud + refuting class; cloud, no change;
    # cloud on both needed dates but the last; clear persistent change
    maps = np.array(
        [[[1, 1, 1, 1, 1]], [[255, 255, 255, 255, 9]], [[9, 5, 1, 255, 9]], [[9, 9, 1, 9, 9]]],
        np.uint8,
    )  # (T=4, 1, 5)
    assert persistent_after(maps, 2)[0].tolist() == [9, 1, 1, 255, 9]  # date 2 not needed
    assert persistent_after(maps, 3)[0].tolist() == [255, 1, 1, 255, 9]
    assert persistent_after(maps, 1)[0].tolist() == [9, 9, 1, 9, 9]
