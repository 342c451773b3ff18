"""Weights-free land cover from band indices (the ``spectral`` model).

Five classes (:data:`SPECTRAL_SCHEMA`): water 0, vegetation 1, bare 2, built-up 3,
cloud 4. Each pixel is classified on its own from reflectance ``DN * scale`` (see
:func:`reflectance_scale`): no training, no context, the same answer for any tiling.
Indices, each guarded against a zero denominator: NDVI = (nir - red) / (nir + red),
NDWI = (green - nir) / (green + nir) (McFeeters 1996), MNDWI = (green - swir1) /
(green + swir1) (Xu 2006), NDBI = (swir1 - nir) / (swir1 + nir) (Zha et al. 2003).

Multispectral rules (NIR present), first match wins:

1. cloud: blue > 0.25, mean(visible) > 0.25, swir1 > 0.2 (if present), NDVI < 0.3
   (green stands in for a missing blue band).
2. water: MNDWI > 0.1 (NDWI > 0.05 without SWIR) and NDVI < 0.1.
3. vegetation: NDVI > 0.35.
4. built-up: NDBI > 0 and NDVI < 0.2, only with SWIR: without it nothing separates
   roofs and roads from soil. NDBI is itself a weak separator from bare soil.
5. bare: everything else.

Visible-only rules (no NIR: aerial RGB, true-colour composites) are weaker: water,
vegetation and built-up differ only by colour, so dark soil or shadow can read as
water and green shallow water as vegetation. Brightness is mean(r, g, b),
saturation the HSV one; first match wins:

1. cloud: brightness > 0.6 and saturation < 0.3.
2. water: (blue - red) / (blue + red) > 0.05 and brightness < 0.5 (water absorbs
   red far more than blue; soil and plants reflect red at least as much as blue).
3. vegetation: excess green (2g - r - b) / (r + g + b) > 0.05.
4. built-up: saturation < 0.15 and 0.2 < brightness < 0.6 (grey, mid-bright).
5. bare: everything else.

Confidence: a rule's margin is the smallest ``(x - t) / s`` over its conditions
``x > t`` (``(t - x) / s`` for ``x < t``), with ``s`` = 0.2 for normalised
differences and 0.1 for reflectance, brightness, saturation and excess green. The
chosen class gets ``p = 0.5 + 0.5 * clip(m, 0, 1)``, ``m`` being the smaller of its
own margin and its distance from firing any rule checked before it: the normalised
distance to the nearest threshold that would change the label. The four other
classes share ``1 - p`` evenly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import BandMismatchError, GeosegError, InvalidRasterError
from geoseg.types import ClassInfo, ClassSchema

__all__ = [
    "BAND_ROLES",
    "SENSORS",
    "SENSOR_ORDERS",
    "SPECTRAL_SCHEMA",
    "BandRoles",
    "SpectralPredictor",
    "reflectance_scale",
    "resolve_band_roles",
]

WATER, VEGETATION, BARE, BUILT_UP, CLOUD = 0, 1, 2, 3, 4

SPECTRAL_SCHEMA = ClassSchema(
    (
        ClassInfo(WATER, "water", (31, 120, 180)),
        ClassInfo(VEGETATION, "vegetation", (51, 160, 44)),
        ClassInfo(BARE, "bare", (210, 180, 140)),
        ClassInfo(BUILT_UP, "built-up", (227, 26, 28)),
        ClassInfo(CLOUD, "cloud", (240, 240, 240)),
    )
)

BAND_ROLES = ("blue", "green", "red", "nir", "swir1", "swir2")

#: Fixed 0-based band orders for ``--sensor``; sentinel2 applies to 13-band L1C stacks.
SENSOR_ORDERS: dict[str, dict[str, int]] = {
    "sentinel2": {"blue": 1, "green": 2, "red": 3, "nir": 7, "swir1": 11, "swir2": 12},
    "landsat8": {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6},
    "landsat9": {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6},
    "rgbnir": {"red": 0, "green": 1, "blue": 2, "nir": 3},
    "rgb": {"red": 0, "green": 1, "blue": 2},
}
SENSORS = tuple(SENSOR_ORDERS)

# Thresholds on reflectance (0-1) and on indices (-1..1); see the module docstring.
CLOUD_MIN_BLUE = 0.25
CLOUD_MIN_VISIBLE = 0.25
CLOUD_MIN_SWIR1 = 0.2
CLOUD_MAX_NDVI = 0.3
WATER_MIN_MNDWI = 0.1
WATER_MIN_NDWI = 0.05
WATER_MAX_NDVI = 0.1
VEGETATION_MIN_NDVI = 0.35
BUILT_MIN_NDBI = 0.0
BUILT_MAX_NDVI = 0.2
RGB_CLOUD_MIN_BRIGHTNESS = 0.6
RGB_CLOUD_MAX_SATURATION = 0.3
RGB_WATER_MIN_BLUE_RED = 0.05
RGB_WATER_MAX_BRIGHTNESS = 0.5
RGB_VEGETATION_MIN_EXG = 0.05
RGB_BUILT_MAX_SATURATION = 0.15
RGB_BUILT_BRIGHTNESS = (0.2, 0.6)

#: Margin that earns full confidence: normalised-difference indices / the rest.
INDEX_MARGIN = 0.2
REFLECTANCE_MARGIN = 0.1
EPSILON = 1e-6

_ALIASES = {
    "blue": "blue", "green": "green", "red": "red", "nir": "nir", "nir08": "nir",
    "swir1": "swir1", "swir16": "swir1", "swir2": "swir2", "swir22": "swir2",
}  # fmt: skip
_S2_ROLES = {"2": "blue", "3": "green", "4": "red", "8": "nir", "11": "swir1", "12": "swir2"}
_OLI_ROLES = {"2": "blue", "3": "green", "4": "red", "5": "nir", "6": "swir1", "7": "swir2"}
_S2_NAME = re.compile(r"^b0?(\d{1,2}|8a)$")
_LANDSAT_NAME = re.compile(r"^(?:sr|st)b0?(\d{1,2})$")
_FIX = (
    "name the bands with --bands red=3,green=2,blue=1,nir=4 (1-based band numbers) "
    f"or pass --sensor ({', '.join(SENSORS)})"
)
RGB_ONLY_WARNING = (
    "no NIR band, so the weaker visible-band rules apply: without NIR/SWIR there is no "
    "NDVI or MNDWI and classes differ by colour alone; add --bands nir=N if there is one"
)


@dataclass(frozen=True)
class BandRoles:
    """Which 0-based band of a scene plays which spectral role.

    Attributes:
        pairs: ``(role, band_index)`` pairs, roles from :data:`BAND_ROLES`, stored
            sorted by band index so equal mappings compare (and hash) equal.
    """

    pairs: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        roles = [r for r, _ in self.pairs]
        indices = [i for _, i in self.pairs]
        if any(r not in BAND_ROLES for r in roles) or len(set(roles)) != len(roles):
            raise BandMismatchError(
                f"band roles must be distinct names from {BAND_ROLES}, got {roles}"
            )
        if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
            raise BandMismatchError(f"band indices must be distinct and >= 0, got {indices}")
        object.__setattr__(self, "pairs", tuple(sorted(self.pairs, key=lambda p: p[1])))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, int]) -> BandRoles:
        """Build from ``{"red": 3, ...}`` (0-based band indices)."""
        return cls(tuple((str(r), int(i)) for r, i in mapping.items()))

    def get(self, role: str) -> int | None:
        """0-based band index of ``role``, or None when the scene lacks it."""
        return dict(self.pairs).get(role)

    @property
    def names(self) -> tuple[str, ...]:
        """Role names in band order, e.g. ``("blue", "green", "red", "nir")``."""
        return tuple(r for r, _ in self.pairs)

    @property
    def has_swir(self) -> bool:
        return self.get("swir1") is not None

    @property
    def is_rgb_only(self) -> bool:
        """True without a NIR band: the weaker visible-band rule set applies."""
        return self.get("nir") is None


def reflectance_scale(dtype: np.dtype | type | str) -> float:
    """Multiplier from stored digital numbers to reflectance in 0-1.

    Float rasters are taken to hold reflectance already (1.0). 16- and 32-bit
    integers follow the Sentinel-2 / Landsat convention of reflectance x 10000
    (1e-4); this is wrong for raw 11/12-bit aerial DNs, which then look dark.
    8-bit rasters are display-stretched imagery, mapped to 0-1 with 1/255.

    Raises:
        InvalidRasterError: for dtypes with no such convention (int8, bool, complex).
    """
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return 1.0
    if dt == np.uint8:
        return 1.0 / 255.0
    if dt.kind in "iu" and dt.itemsize >= 2:
        return 1e-4
    raise InvalidRasterError(
        f"cannot map {dt} band values to reflectance; convert the scene to uint16 "
        "(reflectance x 10000) or float32 (reflectance 0-1)"
    )


def _has_minimum(roles: Iterable[str]) -> bool:
    """Red, green and blue or NIR: the least either rule set can work with."""
    have = set(roles)
    return {"red", "green"} <= have and bool({"blue", "nir"} & have)


def _normalise(text: str | None) -> str:
    return re.sub(r"[^0-9a-z]", "", (text or "").lower())


def _roles_from_descriptions(
    descriptions: Sequence[str | None], force_s2: bool
) -> tuple[dict[str, int], str]:
    """Roles from band names, and the convention that matched ("" for none)."""
    names = [_normalise(d) for d in descriptions]
    found: dict[str, int] = {}
    for exact in (True, False):  # "nir" beats "nir08" when a scene has both
        for i, name in enumerate(names):
            role = _ALIASES.get(name)
            if role and (name == role) == exact:
                found.setdefault(role, i)
    if found:
        return found, "names"
    codes = [m.group(1) if (m := _S2_NAME.match(n)) else None for n in names]
    # Zero-padded codes (B02, B08) are the Sentinel-2 spelling; Landsat writes B2 or SR_B2.
    zero_padded = any(re.fullmatch(r"b0\d", n) for n in names)
    if force_s2 or len(names) == 13 or zero_padded or {"8a", "11", "12"} & set(codes):
        found = {_S2_ROLES[c]: i for i, c in enumerate(codes) if c in _S2_ROLES}
        if "nir" not in found and "8a" in codes:
            found["nir"] = codes.index("8a")
        return found, "sentinel2" if found else ""
    landsat = [m.group(1) if (m := _LANDSAT_NAME.match(n)) else None for n in names]
    found = {_OLI_ROLES[c]: i for i, c in enumerate(landsat) if c in _OLI_ROLES}
    return found, "landsat" if found else ""


def _roles_from_colorinterp(colorinterp: Sequence[str], taken: dict[str, int]) -> dict[str, int]:
    """Fill red/green/blue from GDAL colour interpretation where still unknown."""
    found = dict(taken)
    for i, ci in enumerate(colorinterp):
        name = str(ci).lower().removeprefix("colorinterp.")
        if name in ("red", "green", "blue") and name not in found and i not in found.values():
            found[name] = i
    return found


def _roles_from_sensor(
    sensor: str, descriptions: Sequence[str | None], n_bands: int, path: str
) -> dict[str, int]:
    key = sensor.lower().replace("-", "").replace("_", "")
    if key not in SENSOR_ORDERS:
        raise BandMismatchError(f"unknown sensor {sensor!r}; valid sensors: {', '.join(SENSORS)}")
    if key == "sentinel2" and n_bands != 13:
        return _roles_from_descriptions(descriptions, force_s2=True)[0]
    order = SENSOR_ORDERS[key]
    needed = max(order.values()) + 1
    if n_bands < needed:
        raise BandMismatchError(
            f"--sensor {key} expects at least {needed} bands but {path} has {n_bands}; {_FIX}"
        )
    return dict(order)


def _overrides_to_indices(overrides: Mapping[str, int], n_bands: int, path: str) -> dict[str, int]:
    """``{"red": 3}`` with 1-based band numbers -> ``{"red": 2}``, validated."""
    result: dict[str, int] = {}
    for role, number in overrides.items():
        key = role.strip().lower()
        if key not in BAND_ROLES:
            raise BandMismatchError(
                f"unknown band role {role!r} in --bands; valid roles: {', '.join(BAND_ROLES)}"
            )
        if not 1 <= int(number) <= n_bands:
            raise BandMismatchError(
                f"--bands {key}={number} is out of range: {path} has bands 1..{n_bands}"
            )
        result[key] = int(number) - 1
    if len(set(result.values())) != len(result):
        raise BandMismatchError(f"--bands gives one band two roles: {dict(overrides)}")
    return result


def resolve_band_roles(
    descriptions: Sequence[str | None],
    colorinterp: Sequence[str],
    overrides: Mapping[str, int] | None,
    sensor: str | None,
    path: str,
) -> tuple[BandRoles, list[str]]:
    """Work out which band of a scene is blue, green, red, NIR, SWIR1 and SWIR2.

    ``overrides`` win over everything. Then ``sensor`` (:data:`SENSOR_ORDERS`;
    ``sentinel2`` reads descriptions unless there are 13 bands) or, without it, band
    descriptions (role names or STAC ``nir08``/``swir16``/``swir22``; Sentinel-2
    ``B04``/``B4`` when B8A, B11 or B12 appears or there are 13 bands; Landsat
    ``SR_B4`` with OLI numbers), completed by GDAL colour interpretation. A 3-band
    scene with none of these is assumed R, G, B.

    Args:
        descriptions: one band description per band (None where unset).
        colorinterp: one GDAL colour interpretation name per band (``"red"``, ...).
        overrides: role -> 1-based band number, or None.
        sensor: one of :data:`SENSORS`, or None.
        path: the scene, named in messages.

    Returns:
        The roles and human-readable warnings about assumptions made.

    Raises:
        BandMismatchError: unknown role or sensor, band number out of range, or
            neither red+green+blue nor red+green+nir could be found.
    """
    n_bands = max(len(descriptions), len(colorinterp))
    forced = _overrides_to_indices(overrides or {}, n_bands, path)
    warnings: list[str] = []
    if sensor is not None:
        found = _roles_from_sensor(sensor, descriptions, n_bands, path)
    else:
        found, convention = _roles_from_descriptions(descriptions, force_s2=False)
        if convention == "landsat":
            warnings.append(f"{path}: SR_B* names read as Landsat 8/9 OLI bands (B2 = blue)")
        found = _roles_from_colorinterp(colorinterp, found)
    if not found and not forced and n_bands == 3:
        found = dict(SENSOR_ORDERS["rgb"])
        warnings.append(f"{path}: 3 bands with no names or colour interpretation; assuming R, G, B")
    roles = {r: i for r, i in found.items() if i not in forced.values()} | forced
    if not _has_minimum(roles):
        raise BandMismatchError(
            f"cannot tell which bands of {path} are red, green and blue or NIR (found "
            f"{roles or 'none'} from descriptions {list(descriptions)}); {_FIX}"
        )
    result = BandRoles.from_mapping(roles)
    if result.is_rgb_only:
        warnings.append(f"{path}: {RGB_ONLY_WARNING}")
    return result, warnings


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` clipped to [-1, 1], 0 where ``|den| < EPSILON``."""
    small = np.abs(den) < EPSILON
    return np.clip(np.where(small, 0.0, num / np.where(small, 1.0, den)), -1.0, 1.0)


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised difference ``(a - b) / (a + b)``."""
    return _ratio(a - b, a + b)


def _above(x: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    return (x - threshold) / margin


def _below(x: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    return (threshold - x) / margin


def _multispectral_rules(refl: Mapping[str, np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """Per-class rule margins (> 0 where the rule fires), in priority order."""
    red, green, nir = refl["red"], refl["green"], refl["nir"]
    blue = refl.get("blue", green)
    ndvi = _nd(nir, red)
    cloud = [
        _above(blue, CLOUD_MIN_BLUE, REFLECTANCE_MARGIN),
        _above((red + green + blue) / 3, CLOUD_MIN_VISIBLE, REFLECTANCE_MARGIN),
        _below(ndvi, CLOUD_MAX_NDVI, INDEX_MARGIN),
    ]
    swir1 = refl.get("swir1")
    if swir1 is not None:
        cloud.append(_above(swir1, CLOUD_MIN_SWIR1, REFLECTANCE_MARGIN))
        wet = _above(_nd(green, swir1), WATER_MIN_MNDWI, INDEX_MARGIN)
    else:
        wet = _above(_nd(green, nir), WATER_MIN_NDWI, INDEX_MARGIN)
    rules = [
        (CLOUD, np.minimum.reduce(cloud)),
        (WATER, np.minimum(wet, _below(ndvi, WATER_MAX_NDVI, INDEX_MARGIN))),
        (VEGETATION, _above(ndvi, VEGETATION_MIN_NDVI, INDEX_MARGIN)),
    ]
    if swir1 is not None:
        built = np.minimum(
            _above(_nd(swir1, nir), BUILT_MIN_NDBI, INDEX_MARGIN),
            _below(ndvi, BUILT_MAX_NDVI, INDEX_MARGIN),
        )
        rules.append((BUILT_UP, built))
    return rules


def _rgb_rules(refl: Mapping[str, np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """Visible-band rule margins (> 0 where the rule fires), in priority order."""
    red, green, blue = refl["red"], refl["green"], refl["blue"]
    brightness = (red + green + blue) / 3
    top = np.maximum.reduce([red, green, blue])
    spread = top - np.minimum.reduce([red, green, blue])
    saturation = np.where(top > EPSILON, spread / np.maximum(top, EPSILON), 0.0)
    excess_green = _ratio(2 * green - red - blue, red + green + blue)
    low, high = RGB_BUILT_BRIGHTNESS
    m = REFLECTANCE_MARGIN
    return [
        (CLOUD, np.minimum(
            _above(brightness, RGB_CLOUD_MIN_BRIGHTNESS, m),
            _below(saturation, RGB_CLOUD_MAX_SATURATION, m),
        )),
        (WATER, np.minimum(
            _above(_nd(blue, red), RGB_WATER_MIN_BLUE_RED, INDEX_MARGIN),
            _below(brightness, RGB_WATER_MAX_BRIGHTNESS, m),
        )),
        (VEGETATION, _above(excess_green, RGB_VEGETATION_MIN_EXG, m)),
        (BUILT_UP, np.minimum.reduce([
            _below(saturation, RGB_BUILT_MAX_SATURATION, m),
            _above(brightness, low, m),
            _below(brightness, high, m),
        ])),
    ]  # fmt: skip


def _probabilities(rules: list[tuple[int, np.ndarray]], n_classes: int) -> np.ndarray:
    """First firing rule wins; ``(N, H, W)`` margins -> ``(N, K, H, W)`` probabilities."""
    shape = rules[0][1].shape
    label = np.full(shape, BARE, dtype=np.intp)
    margin = np.full(shape, np.inf, dtype=np.float32)
    decided = np.zeros(shape, dtype=bool)
    blocker = np.full(shape, np.inf, dtype=np.float32)  # distance to firing an earlier rule
    for class_id, score in rules:
        fires = (score > 0) & ~decided
        label[fires] = class_id
        margin[fires] = np.minimum(score, blocker)[fires]
        decided |= fires
        blocker = np.minimum(blocker, -score)
    margin[~decided] = blocker[~decided]
    p = (0.5 + 0.5 * np.clip(margin, 0.0, 1.0)).astype(np.float32)
    out = np.repeat(((1 - p) / (n_classes - 1))[:, None], n_classes, axis=1)
    np.put_along_axis(out, label[:, None], p[:, None], axis=1)
    return out


class SpectralPredictor:
    """Rule-based land cover from band indices; implements ``Predictor``.

    Args:
        roles: which band of the input is which role (see :func:`resolve_band_roles`).
        scale: reflectance per digital number (see :func:`reflectance_scale`).

    Attributes:
        schema: :data:`SPECTRAL_SCHEMA` (water, vegetation, bare, built-up, cloud).
        bands: the roles used, in band order, e.g. ``("blue", "green", "red", "nir")``.
    """

    def __init__(self, roles: BandRoles, scale: float) -> None:
        if not np.isfinite(scale) or scale <= 0:
            raise GeosegError(f"reflectance scale must be a positive number, got {scale}")
        if not _has_minimum(roles.names):
            raise BandMismatchError(
                f"the spectral model needs red, green and blue or NIR; got {roles}"
            )
        self.roles = roles
        self.scale = float(scale)
        self.schema: ClassSchema = SPECTRAL_SCHEMA
        self.bands: tuple[str, ...] = roles.names

    def _reflectances(self, batch: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """``(N, H, W) float32`` reflectance per role; 0 at invalid or non-finite pixels.

        ``batch`` may hold every band of the scene (indexed by band number) or just
        :attr:`bands`, in that order.
        """
        n_channels = batch.shape[1]
        if n_channels > max(i for _, i in self.roles.pairs):
            index = dict(self.roles.pairs)
        elif n_channels == len(self.bands):
            index = {role: k for k, role in enumerate(self.bands)}
        else:
            raise BandMismatchError(
                f"the spectral model needs bands {dict(self.roles.pairs)} (0-based) "
                f"or just {self.bands}; got {n_channels} channels"
            )
        out = {}
        for role, i in index.items():
            values = np.where(valid, batch[:, i].astype(np.float32) * np.float32(self.scale), 0)
            out[role] = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        return out

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities, pixel by pixel.

        Args:
            batch: ``(N, C, H, W) float32`` stored band values (digital numbers).
            valid: ``(N, H, W) bool``; False pixels get arbitrary but finite output.

        Returns:
            ``(N, 5, H, W) float32`` probabilities summing to 1 over classes.
        """
        batch, valid = np.asarray(batch), np.asarray(valid, dtype=bool)
        if batch.ndim != 4 or valid.shape != (batch.shape[0], *batch.shape[2:]):
            raise GeosegError(
                f"predict needs batch (N, C, H, W) and valid (N, H, W); got {batch.shape} "
                f"and {valid.shape}"
            )
        with np.errstate(all="ignore"):
            refl = self._reflectances(batch, valid)
            rules = _rgb_rules(refl) if self.roles.is_rgb_only else _multispectral_rules(refl)
            return _probabilities(rules, len(self.schema))
