from __future__ import annotations

import numpy as np
import pytest

from geoseg.change.mmu import apply_mmu
from geoseg.errors import GeosegError

K = 3


def test_small_patches_revert_to_no_change() -> None:
    codes = np.zeros((6, 6), np.int32)  # 0 = class 0 -> class 0
    codes[0, 0] = 2  # 1-px patch 0 -> 2
    codes[3:5, 3:5] = 5  # 4-px patch 1 -> 2
    codes[5, 0] = 9  # nodata stays
    codes[1, 1] = 2  # diagonal neighbour of (0, 0): one patch with 8-connectivity
    area = np.full(codes.shape, 100.0)
    out = apply_mmu(codes, K, area, min_area_m2=300)
    assert out[0, 0] == out[1, 1] == 0 and (out[3:5, 3:5] == 5).all() and out[5, 0] == 9
    kept = apply_mmu(codes, K, area, min_area_m2=150)
    assert kept[0, 0] == 2  # 2 px together with 8-connectivity
    split = apply_mmu(codes, K, area, min_area_m2=150, connectivity=4)
    assert split[0, 0] == 0
    with pytest.raises(GeosegError):
        apply_mmu(codes, K, area, 1, connectivity=6)


def test_patch_of_a_class_that_changed_from_class_one_reverts_to_one() -> None:
    codes = np.full((3, 3), 4, np.int32)  # 1 -> 1
    codes[1, 1] = 3  # 1 -> 0
    assert apply_mmu(codes, K, np.ones((3, 3)), 2)[1, 1] == 4


@pytest.mark.parametrize("connectivity", [4, 8])
def test_chunked_mmu_equals_whole_array_for_any_chunking(connectivity: int) -> None:
    import dask.array as da
    from affine import Affine

    from geoseg.areas import pixel_area_m2
    from geoseg.change.mmu import mmu_blocks

    rng = np.random.default_rng(5)
    blobs = np.kron(rng.integers(0, K * K, size=(12, 10)), np.ones((4, 5), np.int64))
    noise = rng.integers(0, K * K + 1, size=blobs.shape)
    codes = np.where(rng.random(blobs.shape) < 0.3, noise, blobs).astype(np.int32)
    transform = Affine(0.0002, 0, 15.0, 0, -0.0002, 46.0)
    area = pixel_area_m2("EPSG:4326", transform, np.arange(48), np.arange(50))
    mmu = 6 * float(area.mean())
    whole = apply_mmu(codes, K, area, mmu, connectivity)
    changed = (codes < K * K) & (codes // K != codes % K)
    assert (whole[changed] != codes[changed]).any()  # some patches dropped
    assert (whole[changed] == codes[changed]).any()  # some kept
    for chunks in [(48, 50), (7, 9), (3, 4), (16, 11)]:
        lazy = mmu_blocks(da.from_array(codes[None], chunks=(1, *chunks)), K, "EPSG:4326",
                          transform, mmu, connectivity)  # fmt: skip
        np.testing.assert_array_equal(lazy.compute()[0], whole)
