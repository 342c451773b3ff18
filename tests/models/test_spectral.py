"""Tests for the weights-free spectral land-cover model."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import BandMismatchError, InvalidRasterError
from geoseg.models.bands import BAND_ROLES, BandRoles, reflectance_scale, resolve_band_roles
from geoseg.models.spectral import (
    SPECTRAL_SCHEMA,
    SpectralPredictor,
)
from geoseg.types import Predictor

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
WATER, VEGETATION, BARE, BUILT_UP, CLOUD = range(5)
S2_ROLES = BandRoles.from_mapping(
    {"blue": 0, "green": 1, "red": 2, "nir": 3, "swir1": 4, "swir2": 5}
)
RGB_ROLES = BandRoles.from_mapping({"red": 0, "green": 1, "blue": 2})

# Reflectance (blue, green, red, nir, swir1, swir2) and the class it must get.
S2_PIXELS = {
    WATER: (0.08, 0.07, 0.05, 0.03, 0.01, 0.005),  # MNDWI 0.75, NDVI -0.25
    VEGETATION: (0.04, 0.08, 0.04, 0.40, 0.20, 0.10),  # NDVI 0.82
    BARE: (0.12, 0.15, 0.20, 0.25, 0.22, 0.18),  # NDVI 0.11, NDBI -0.06
    BUILT_UP: (0.10, 0.11, 0.12, 0.15, 0.25, 0.22),  # NDBI 0.25, NDVI 0.11
    CLOUD: (0.45, 0.44, 0.43, 0.45, 0.30, 0.22),  # bright, flat, NDVI 0.02
}
# uint8 (red, green, blue) and the class it must get under the visible-band rules.
RGB_PIXELS = {
    WATER: (20, 25, 40),
    VEGETATION: (60, 90, 50),
    BARE: (180, 140, 100),
    BUILT_UP: (110, 110, 105),
    CLOUD: (250, 250, 255),
}


def _predict_pixels(model: SpectralPredictor, pixels: np.ndarray) -> np.ndarray:
    """``(P, C)`` band values -> ``(P, 5)`` probabilities, as one 1 x P window."""
    batch = pixels.T[None, :, None, :].astype(np.float32)
    valid = np.ones((1, 1, pixels.shape[0]), dtype=bool)
    return model.predict(batch, valid)[0, :, 0, :].T


def test_schema_ids_names_and_colours() -> None:
    assert SPECTRAL_SCHEMA.ids == (0, 1, 2, 3, 4)
    assert SPECTRAL_SCHEMA.names == ("water", "vegetation", "bare", "built-up", "cloud")
    assert SPECTRAL_SCHEMA.classes[0].colour == (31, 120, 180)
    assert SPECTRAL_SCHEMA.classes[4].colour == (240, 240, 240)


def test_multispectral_pixels_get_the_hand_computed_class() -> None:
    model = SpectralPredictor(S2_ROLES, scale=1e-4)
    classes = list(S2_PIXELS)
    dn = np.array([S2_PIXELS[c] for c in classes]) * 10000
    probs = _predict_pixels(model, dn)
    assert probs.argmax(axis=1).tolist() == classes
    # water: margins MNDWI (0.75 - 0.1) / 0.2 and NDVI (0.1 + 0.25) / 0.2 both >= 1
    assert probs[0, WATER] == pytest.approx(1.0)
    # bare: nearest threshold is NDBI 0 (built-up), (0 - -0.03/0.47) / 0.2 away
    margin = (0.03 / 0.47) / 0.2
    assert probs[2, BARE] == pytest.approx(0.5 + 0.5 * margin, abs=1e-4)
    assert probs[2, WATER] == pytest.approx((0.5 - 0.5 * margin) / 4, abs=1e-4)


def test_confidence_grows_with_distance_from_the_threshold() -> None:
    model = SpectralPredictor(S2_ROLES, scale=1.0)
    # NDVI = 0.16 / 0.36 = 0.444: vegetation, 0.47 margins above the 0.35 threshold
    probs = _predict_pixels(model, np.array([[0.05, 0.08, 0.10, 0.26, 0.15, 0.08]]))
    p = 0.5 + 0.5 * (0.16 / 0.36 - 0.35) / 0.2
    assert probs[0, VEGETATION] == pytest.approx(p, abs=1e-5)
    others = np.delete(probs[0], VEGETATION)
    np.testing.assert_allclose(others, (1 - p) / 4, atol=1e-6)


def test_rgb_pixels_get_the_visible_band_class() -> None:
    model = SpectralPredictor(RGB_ROLES, scale=reflectance_scale(np.uint8))
    classes = list(RGB_PIXELS)
    probs = _predict_pixels(model, np.array([RGB_PIXELS[c] for c in classes]))
    assert probs.argmax(axis=1).tolist() == classes


def test_nir_without_swir_uses_ndwi_and_has_no_built_up() -> None:
    roles = BandRoles.from_mapping({"red": 0, "green": 1, "blue": 2, "nir": 3})
    model = SpectralPredictor(roles, scale=1.0)
    pixels = np.array(
        [
            [0.05, 0.07, 0.08, 0.03],  # NDWI 0.4, NDVI -0.25: water
            [0.12, 0.11, 0.10, 0.15],  # the built-up pixel above, without SWIR
        ]
    )
    assert _predict_pixels(model, pixels).argmax(axis=1).tolist() == [WATER, BARE]


def test_predictor_meets_the_protocol() -> None:
    model = SpectralPredictor(S2_ROLES, scale=1e-4)
    assert isinstance(model, Predictor)
    assert model.schema == SPECTRAL_SCHEMA
    assert model.bands == ("blue", "green", "red", "nir", "swir1", "swir2")
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 6000, size=(2, 6, 5, 7)).astype(np.float32)
    probs = model.predict(batch, np.ones((2, 5, 7), dtype=bool))
    assert probs.shape == (2, 5, 5, 7)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert probs.min() >= 0.0 and probs.max(axis=1).min() >= 0.5
    np.testing.assert_array_equal(model.predict(batch, np.ones((2, 5, 7), bool)), probs)


@pytest.mark.parametrize("roles", [S2_ROLES, RGB_ROLES], ids=["multispectral", "rgb"])
def test_prediction_is_pixel_wise(roles: BandRoles) -> None:
    rng = np.random.default_rng(1)
    n_bands = len(roles.names)
    batch = rng.uniform(0, 0.6, size=(3, n_bands, 6, 4)).astype(np.float32)
    model = SpectralPredictor(roles, scale=1.0)
    probs = model.predict(batch, np.ones((3, 6, 4), dtype=bool))
    # Shuffle the 72 pixels across windows and positions: outputs shuffle the same way.
    pixels = batch.transpose(1, 0, 2, 3).reshape(n_bands, -1)
    order = rng.permutation(pixels.shape[1])
    shuffled = pixels[:, order].reshape(n_bands, 2, 9, 4).transpose(1, 0, 2, 3)
    out = model.predict(np.ascontiguousarray(shuffled), np.ones((2, 9, 4), dtype=bool))
    expected = probs.transpose(1, 0, 2, 3).reshape(5, -1)[:, order]
    np.testing.assert_array_equal(out.transpose(1, 0, 2, 3).reshape(5, -1), expected)


def test_invalid_pixels_give_finite_output_without_warnings() -> None:
    model = SpectralPredictor(S2_ROLES, scale=1e-4)
    batch = np.zeros((1, 6, 2, 3), dtype=np.float32)
    batch[0, :, 0, 0] = np.nan
    batch[0, :, 0, 1] = np.inf
    batch[0, :, 1] = np.array(S2_PIXELS[VEGETATION])[:, None] * 10000
    valid = np.array([[[False, False, False], [True, True, True]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = model.predict(batch, valid)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs[0, :, 1].argmax(axis=0) == VEGETATION).all()


def test_batch_may_hold_all_scene_bands_or_just_the_model_bands() -> None:
    roles, _ = resolve_band_roles([f"B{i}" for i in range(1, 13)] + ["B8A"], [], None, None, "x")
    model = SpectralPredictor(roles, scale=1e-4)
    rng = np.random.default_rng(2)
    scene = rng.uniform(0, 5000, size=(1, 13, 4, 4)).astype(np.float32)
    valid = np.ones((1, 4, 4), dtype=bool)
    subset = scene[:, [i for _, i in roles.pairs]]
    np.testing.assert_array_equal(model.predict(subset, valid), model.predict(scene, valid))
    with pytest.raises(BandMismatchError, match="got 4 channels"):
        model.predict(scene[:, :4], valid)


def test_reflectance_scale_by_dtype() -> None:
    assert reflectance_scale(np.float32) == 1.0
    assert reflectance_scale("float64") == 1.0
    for dtype in (np.uint16, np.int16, np.int32, np.uint32):
        assert reflectance_scale(dtype) == pytest.approx(1e-4)
    assert reflectance_scale(np.uint8) == pytest.approx(1 / 255)
    with pytest.raises(InvalidRasterError, match="int8"):
        reflectance_scale(np.int8)


def test_band_roles_value_semantics() -> None:
    a = BandRoles.from_mapping({"nir": 7, "red": 3, "green": 2, "blue": 1})
    b = BandRoles.from_mapping({"blue": 1, "green": 2, "red": 3, "nir": 7})
    assert a == b and hash(a) == hash(b)
    assert pickle.loads(pickle.dumps(a)) == a
    assert a.get("nir") == 7 and a.get("swir1") is None
    assert a.names == ("blue", "green", "red", "nir")
    assert not a.has_swir and not a.is_rgb_only and RGB_ROLES.is_rgb_only
    assert S2_ROLES.has_swir
    with pytest.raises(BandMismatchError, match="distinct"):
        BandRoles.from_mapping({"red": 0, "green": 0})
    with pytest.raises(BandMismatchError):
        BandRoles.from_mapping({"pan": 0})


S2_EXPECTED = {"blue": 1, "green": 2, "red": 3, "nir": 7, "swir1": 11, "swir2": 12}
EOLEARN_NAMES = [f"B{i:02d}" for i in range(1, 9)] + ["B8A", "B09", "B10", "B11", "B12"]
SEN1FLOODS11_NAMES = [f"B{i}" for i in range(1, 9)] + ["B8A", "B9", "B10", "B11", "B12"]


@pytest.mark.parametrize("names", [EOLEARN_NAMES, SEN1FLOODS11_NAMES], ids=["B01", "B1"])
def test_sentinel2_descriptions(names: list[str]) -> None:
    gray = ["gray"] + ["undefined"] * 12
    roles, warns = resolve_band_roles(names, gray, None, None, "s2.tif")
    assert dict(roles.pairs) == S2_EXPECTED
    assert warns == []


def test_sentinel2_sensor_uses_the_l1c_order() -> None:
    roles, _ = resolve_band_roles([None] * 13, [], None, "sentinel2", "s2.tif")
    assert dict(roles.pairs) == S2_EXPECTED


def test_role_name_descriptions_and_stac_aliases() -> None:
    roles, warns = resolve_band_roles(["Red", "GREEN", "blue", "NIR"], [], None, None, "a.tif")
    assert dict(roles.pairs) == {"red": 0, "green": 1, "blue": 2, "nir": 3}
    assert warns == []
    names = ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"]
    roles, _ = resolve_band_roles(names, [], None, None, "stac.tif")
    assert dict(roles.pairs) == {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6}


def test_landsat_collection2_names_use_oli_numbering() -> None:
    names = [f"SR_B{i}" for i in range(1, 8)]
    roles, warns = resolve_band_roles(names, [], None, None, "lc09.tif")
    assert dict(roles.pairs) == {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6}
    assert any("OLI" in w for w in warns)


def test_sensor_orders() -> None:
    roles, _ = resolve_band_roles([None] * 7, [], None, "landsat8", "lc08.tif")
    assert dict(roles.pairs) == {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6}
    roles, _ = resolve_band_roles([None] * 4, [], None, "rgbnir", "naip.tif")
    assert dict(roles.pairs) == {"red": 0, "green": 1, "blue": 2, "nir": 3}
    with pytest.raises(BandMismatchError, match="at least 7 bands"):
        resolve_band_roles([None] * 4, [], None, "landsat9", "short.tif")
    with pytest.raises(BandMismatchError, match="valid sensors: sentinel2"):
        resolve_band_roles([None] * 4, [], None, "modis", "m.tif")


def test_overrides_are_one_based_and_win() -> None:
    undefined = ["undefined"] * 4
    overrides = {"red": 3, "green": 2, "blue": 1, "nir": 4}
    roles, warns = resolve_band_roles([None] * 4, undefined, overrides, None, "bgrn.tif")
    assert dict(roles.pairs) == {"blue": 0, "green": 1, "red": 2, "nir": 3}
    assert warns == []
    # Colour interpretation gives RGB; --bands nir=4 adds NIR, so no RGB-only warning.
    rgbu = ["red", "green", "blue", "undefined"]
    roles, warns = resolve_band_roles([None] * 4, rgbu, {"nir": 4}, None, "rgbn.tif")
    assert dict(roles.pairs) == {"red": 0, "green": 1, "blue": 2, "nir": 3}
    assert warns == []


def test_colorinterp_rgb_warns_about_the_weaker_rules() -> None:
    roles, warns = resolve_band_roles([None] * 3, ["red", "green", "blue"], None, None, "a.tif")
    assert dict(roles.pairs) == {"red": 0, "green": 1, "blue": 2}
    assert len(warns) == 1 and "NIR/SWIR" in warns[0] and "weaker" in warns[0]


def test_bare_three_band_scene_is_assumed_rgb_with_a_warning() -> None:
    roles, warns = resolve_band_roles([None] * 3, ["gray"] * 3, None, None, "plain.tif")
    assert dict(roles.pairs) == {"red": 0, "green": 1, "blue": 2}
    assert any("assuming R, G, B" in w for w in warns)
    assert any("weaker" in w for w in warns)


def test_two_bands_cannot_be_resolved() -> None:
    with pytest.raises(BandMismatchError, match=r"two\.tif.*--bands red=3.*--sensor"):
        resolve_band_roles([None, None], ["gray", "undefined"], None, None, "two.tif")


def test_plain_band_numbers_alone_are_ambiguous() -> None:
    with pytest.raises(BandMismatchError, match=r"ambiguous\.tif"):
        resolve_band_roles(["B2", "B3", "B4", "B8"], [], None, None, "ambiguous.tif")


def test_unknown_override_role_lists_the_valid_roles() -> None:
    with pytest.raises(BandMismatchError, match="valid roles") as info:
        resolve_band_roles([None] * 4, [], {"nir": 4, "pan": 1}, None, "a.tif")
    assert all(role in str(info.value) for role in BAND_ROLES)


def test_override_out_of_range() -> None:
    with pytest.raises(BandMismatchError, match=r"nir=5.*a\.tif has bands 1\.\.4"):
        resolve_band_roles([None] * 4, [], {"nir": 5}, None, "a.tif")


def _read(path: Path) -> tuple[np.ndarray, list[str | None], list[str], str]:
    rasterio = pytest.importorskip("rasterio")
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    with rasterio.open(path) as src:
        ci = [c.name for c in src.colorinterp]
        return src.read(), list(src.descriptions), ci, src.dtypes[0]


def _classify(path: Path) -> tuple[np.ndarray, list[str]]:
    """``(H, W)`` class ids of a whole (small) scene, and the band-role warnings."""
    data, names, ci, dtype = _read(path)
    roles, warns = resolve_band_roles(names, ci, None, None, str(path))
    model = SpectralPredictor(roles, reflectance_scale(dtype))
    valid = np.ones(data.shape[1:], dtype=bool)
    probs = model.predict(data[None].astype(np.float32), valid[None])
    return probs[0].argmax(axis=0), warns


def test_sen1floods11_water_iou() -> None:
    classes, _ = _classify(DATA / "sen1floods11_spain" / "Spain_7370579_S2Hand.tif")
    label = _read(DATA / "sen1floods11_spain" / "Spain_7370579_LabelHand.tif")[0][0]
    scored = label >= 0
    water, truth = classes == WATER, label == 1
    iou = (water & truth)[scored].sum() / (water | truth)[scored].sum()
    assert iou > 0.72  # measured 0.757


def test_eolearn_forest_and_grassland_are_vegetation() -> None:
    geotiff = DATA / "eolearn_slovenia_lulc" / "geotiff"
    classes, _ = _classify(geotiff / "s2_l1c_2015-09-09.tif")
    lulc = _read(geotiff / "lulc.tif")[0][0]
    green = (lulc == 2) | (lulc == 3)
    assert (classes[green] == VEGETATION).mean() > 0.95  # measured 1.0


def test_landsat7_rgb_sea_is_mostly_water() -> None:
    path = DATA / "landsat7_rgb_byte" / "RGB.byte.tif"
    classes, warns = _classify(path)
    data = _read(path)[0]
    counts = np.bincount(classes[(data != 0).all(axis=0)], minlength=5)
    share = counts / counts.sum()
    assert any("weaker" in w for w in warns)
    assert share[WATER] > 0.6  # measured 0.72; the scene is mostly shallow sea
    assert share[VEGETATION] + share[BARE] > 0.12  # measured 0.19: Andros island
