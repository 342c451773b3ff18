from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from affine import Affine
from pyproj import Geod

from geoseg.areas import ACRE_M2, pixel_area_m2
from geoseg.change.transitions import label_pair_codes, transition_codes, transition_matrix
from geoseg.errors import GeosegError

IDS = (1, 4, 9)
NAMES = ("forest", "water", "urban")
BEFORE = np.array([[1, 1, 4, 9], [1, 255, 4, 9], [9, 9, 4, 1]], np.uint8)
AFTER = np.array([[1, 9, 4, 9], [4, 1, 255, 9], [9, 9, 1, 7]], np.uint8)  # 7 is not a class
# hand-counted pixels (rows from, cols to: forest, water, urban)
EXPECTED_PIXELS = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 4]])
EXPECTED_NODATA = 3  # 255 before, 255 after, 7 after


def _matrix(before, after, crs, transform, chunk=2, **kw):
    return transition_matrix(
        da.from_array(before, chunks=chunk), da.from_array(after, chunks=chunk), crs, transform,
        IDS, NAMES, **kw,
    )  # fmt: skip


def test_codes_mark_nodata_and_unknown_classes() -> None:
    codes = transition_codes(BEFORE, AFTER, IDS)
    assert codes[0].tolist() == [0, 2, 4, 8]
    assert codes[1, 1] == codes[1, 2] == codes[2, 3] == 9


def test_equal_area_grid_gives_a_times_e_per_pixel() -> None:
    # EPSG:6933 is equal-area on the WGS84 ellipsoid: a pixel's true area is |a·e|
    transform = Affine(30, 0, 1_000_000, 0, -20, 4_000_000)
    m = _matrix(BEFORE, AFTER, "EPSG:6933", transform)
    np.testing.assert_array_equal(m.pixels, EXPECTED_PIXELS)
    assert m.nodata_pixels == EXPECTED_NODATA
    np.testing.assert_allclose(m.area_m2, EXPECTED_PIXELS * 600.0, rtol=1e-9, atol=0)
    assert m.nodata_area_m2 == pytest.approx(3 * 600.0, rel=1e-9)
    np.testing.assert_allclose(m.area("ha"), EXPECTED_PIXELS * 0.06, rtol=1e-9)
    np.testing.assert_allclose(m.area("acres"), EXPECTED_PIXELS * 600 / ACRE_M2, rtol=1e-9)
    np.testing.assert_allclose(m.area("km2"), EXPECTED_PIXELS * 6e-4, rtol=1e-9)


def test_geographic_pixels_match_geod_polygon_areas() -> None:
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)
    m = _matrix(BEFORE, AFTER, "EPSG:4326", transform)
    geod = Geod(ellps="WGS84")
    expected = np.zeros((3, 3))
    index = {c: i for i, c in enumerate(IDS)}
    for r in range(3):
        # densified along parallels: Geod joins vertices by geodesics, pixels follow parallels
        lons = list(np.linspace(10.0, 10.001, 50))
        top, bottom = 60.0 - 0.001 * r, 60.0 - 0.001 * (r + 1)
        for c in range(4):
            if BEFORE[r, c] not in index or AFTER[r, c] not in index:
                continue
            x = [v + 0.001 * c for v in lons]
            area, _ = geod.polygon_area_perimeter(x + x[::-1], [top] * len(x) + [bottom] * len(x))
            expected[index[BEFORE[r, c]], index[AFTER[r, c]]] += abs(area)
    np.testing.assert_allclose(m.area_m2, expected, rtol=1e-7)


def test_cells_plus_nodata_equal_total_area() -> None:
    transform = Affine(10, 0, 500_000, 0, -10, 5_100_000)
    m = _matrix(BEFORE, AFTER, "EPSG:32633", transform)
    total = pixel_area_m2("EPSG:32633", transform, np.arange(3), np.arange(4)).sum()
    # UTM pixels count 1/B² of their cell's exact area (module doc): close, not bit-equal
    assert m.total_area_m2 == pytest.approx(total, rel=1e-9)
    assert int(m.pixels.sum()) + m.nodata_pixels == BEFORE.size


def test_net_and_gross_change() -> None:
    m = _matrix(BEFORE, AFTER, "EPSG:6933", Affine(10, 0, 0, 0, -10, 0))
    np.testing.assert_array_equal(m.gross_gain_pixels(), [1, 1, 1])
    np.testing.assert_array_equal(m.gross_loss_pixels(), [2, 1, 0])
    np.testing.assert_allclose(m.net_change_m2(), [-100, 0, 100], rtol=1e-8)
    np.testing.assert_allclose(m.net_change_m2(), m.area_m2.sum(0) - m.area_m2.sum(1), atol=1e-9)


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326", "EPSG:3857"])
def test_every_number_is_the_same_for_any_chunk_size(crs: str) -> None:
    rng = np.random.default_rng(3)
    before = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(97, 83))
    after = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(97, 83))
    step = 0.0003 if crs == "EPSG:4326" else 10
    transform = Affine(step, 0, 15.0 if crs == "EPSG:4326" else 500_000, 0, -step, 5_100_000
                       if crs != "EPSG:4326" else 46.0)  # fmt: skip
    ref = _matrix(before, after, crs, transform, chunk=1000)
    for chunk, scheduler in [(7, "threads"), (16, "sync"), ((40, 13), "threads")]:
        m = _matrix(before, after, crs, transform, chunk=chunk, scheduler=scheduler)
        np.testing.assert_array_equal(m.area_m2, ref.area_m2)  # bit for bit
        np.testing.assert_array_equal(m.pixels, ref.pixels)
        assert m.nodata_area_m2 == ref.nodata_area_m2


def test_unknown_unit_is_refused() -> None:
    m = _matrix(BEFORE, AFTER, "EPSG:6933", Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(GeosegError, match="unknown area unit"):
        m.area("hectares")


def test_pair_codes_agree_with_codes_for_any_ids_and_dtypes() -> None:
    codes = transition_codes(BEFORE, AFTER, IDS)
    pair = label_pair_codes(BEFORE, AFTER, IDS)  # i * (K + 1) + j, K = nodata
    i, j = np.divmod(pair.astype(int), 4)
    np.testing.assert_array_equal(np.where((i == 3) | (j == 3), 9, i * 3 + j), codes)
    wide = transition_codes(BEFORE.astype(np.int32), AFTER.astype(np.int64), IDS)
    np.testing.assert_array_equal(wide, codes)
    # class ids 0..K-1 take the byte-arithmetic path; 7 and 255 are nodata there too
    before = np.array([[0, 1, 2, 7, 255]], np.uint8)
    after = np.array([[2, 2, 0, 1, 1]], np.uint8)
    assert transition_codes(before, after, (0, 1, 2)).tolist() == [[2, 5, 6, 9, 9]]
    assert label_pair_codes(before, after, (0, 1, 2)).tolist() == [[2, 6, 8, 13, 13]]


def _exact_sums(before, after, crs, transform):
    """Per-pixel-area weighted bincount: the reference the matrix must match."""
    area = pixel_area_m2(crs, transform, np.arange(before.shape[0]), np.arange(before.shape[1]))
    codes = transition_codes(before, after, IDS)
    return np.bincount(codes.ravel(), weights=area.ravel(), minlength=len(IDS) ** 2 + 1)


@pytest.mark.parametrize(
    ("crs", "transform", "rtol"),
    [
        # UTM 33N at 60 N, 330 km west of the central meridian (largest scale gradient)
        ("EPSG:32633", Affine(10, 0, 170_000, 0, -10, 6_700_000), 1e-6),
        ("EPSG:32633", Affine(30, 0, 170_000, 0, -30, 6_700_000), 1e-6),
        ("EPSG:3035", Affine(100, 0, 2_000_000, 0, -100, 5_000_000), 1e-6),
        # cylindrical and geographic grids: whole rows share one exact area
        ("EPSG:3857", Affine(10, 0, 1_500_000, 0, -10, 8_400_000), 1e-9),
        ("EPSG:4326", Affine(1e-4, 0, 10.0, 0, -1e-4, 60.0), 1e-9),
    ],
)
def test_areas_match_the_exact_per_pixel_sums(crs: str, transform: Affine, rtol: float) -> None:
    rng = np.random.default_rng(5)
    before = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(96, 70))
    after = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(96, 70))
    m = _matrix(before, after, crs, transform, chunk=40)
    exact = _exact_sums(before, after, crs, transform)
    got = np.r_[m.area_m2.ravel(), m.nodata_area_m2]
    np.testing.assert_allclose(got, exact, rtol=rtol)
    assert got.sum() == pytest.approx(exact.sum(), rel=rtol)


def test_a_lone_projected_pixel_is_within_1e_5_of_its_own_area() -> None:
    # worst case of the B x B cells: one pixel at a cell corner, where the
    # area gradient (UTM zone edge at 60 N, 30 m pixels, B = 16) is steepest
    transform = Affine(30, 0, 170_000, 0, -30, 6_700_000)
    before = np.full((32, 32), 4, np.uint8)
    before[0, 0] = 1
    m = _matrix(before, before, "EPSG:32633", transform, chunk=32)
    own = pixel_area_m2("EPSG:32633", transform, [0], [0])[0, 0]
    assert m.pixels[0, 0] == 1
    assert m.area_m2[0, 0] == pytest.approx(own, rel=1e-5)
    # whole cells: the sum is the cells' exact area, ~1e-9 from the sum of pixel areas
    cells = pixel_area_m2("EPSG:32633", transform, np.arange(32), np.arange(32)).sum()
    assert m.total_area_m2 == pytest.approx(cells, rel=1e-8)


def test_zones_and_pairs_of_the_sink_agree_with_the_matrix() -> None:
    from geoseg.change.transitions import TransitionSink

    transform = Affine(10, 0, 500_000, 0, -10, 5_100_000)
    m = _matrix(BEFORE, AFTER, "EPSG:32633", transform)
    sink = TransitionSink(IDS, "EPSG:32633", transform, n_zones=2)
    left = np.zeros(BEFORE.shape, bool)
    left[:, :2] = True
    codes = transition_codes(BEFORE, AFTER, IDS)
    sink.add_codes(slice(0, 3), slice(0, 4), codes, [(0, left), (1, ~left)])
    halves = [sink.matrix(NAMES, z) for z in (0, 1)]
    np.testing.assert_array_equal(halves[0].pixels + halves[1].pixels, m.pixels)
    np.testing.assert_allclose(halves[0].area_m2 + halves[1].area_m2, m.area_m2, rtol=1e-12)
    pairs = TransitionSink(IDS, "EPSG:32633", transform)
    pairs[(slice(0, 2), slice(0, 3), slice(0, 4))] = np.stack([BEFORE, AFTER])
    np.testing.assert_array_equal(pairs.matrix(NAMES).area_m2, m.area_m2)


def test_large_blocks_without_a_cached_base_count_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import geoseg.change.transitions as transitions

    transform = Affine(10, 0, 500_000, 0, -10, 5_100_000)
    ref = _matrix(BEFORE, AFTER, "EPSG:32633", transform)
    monkeypatch.setattr(transitions, "_MAX_CACHED_BASE", 0)
    m = _matrix(BEFORE, AFTER, "EPSG:32633", transform)
    np.testing.assert_array_equal(m.area_m2, ref.area_m2)
    np.testing.assert_array_equal(m.pixels, EXPECTED_PIXELS)
