"""Which band of a scene is blue, green, red, NIR, SWIR: band roles and reflectance scale.

Roles come from, in order: explicit ``--bands red=3,...`` overrides (1-based),
``--sensor`` fixed layouts, band descriptions (role names, Sentinel-2 ``B02``/``B2``
codes, Landsat ``SR_B4``), GDAL colour interpretation, and finally a bare 3-band
file taken as R, G, B.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import BandMismatchError, InvalidRasterError
from geoseg.models.band_order import (
    DARK_MIN_RED_EXCESS,
    DARK_MIN_RED_SHARE,
    DARK_SHARE,
    band_order_doubt,
    swapped_red_blue,
)

__all__ = [
    "BAND_ROLES",
    "DARK_MIN_RED_EXCESS",
    "DARK_MIN_RED_SHARE",
    "DARK_SHARE",
    "RGB_ONLY_WARNING",
    "SENSORS",
    "SENSOR_ORDERS",
    "BandRoles",
    "band_match_keys",
    "band_order_doubt",
    "band_order_is_guess",
    "has_minimum_roles",
    "input_scale",
    "named_by_colour",
    "reflectance_scale",
    "resolve_band_roles",
    "swapped_red_blue",
]

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

_ALIASES = {
    "blue": "blue", "green": "green", "red": "red", "nir": "nir", "nir08": "nir",
    "swir1": "swir1", "swir16": "swir1", "swir2": "swir2", "swir22": "swir2",
}  # fmt: skip
_S2_ROLES = {"2": "blue", "3": "green", "4": "red", "8": "nir", "11": "swir1", "12": "swir2"}
_OLI_ROLES = {"2": "blue", "3": "green", "4": "red", "5": "nir", "6": "swir1", "7": "swir2"}
#: Role names (STAC common names and geoseg's roles) -> the Sentinel-2 band they are, by
#: canonical name; only names that fit one S2 band ("rededge" and "nir08" fit several).
_S2_BAND_OF_ROLE = {
    "coastal": "b1", "blue": "b2", "green": "b3", "red": "b4", "rededge1": "b5",
    "rededge2": "b6", "rededge3": "b7", "nir": "b8", "cirrus": "b10", "swir16": "b11",
    "swir1": "b11", "swir22": "b12", "swir2": "b12",
}  # fmt: skip
#: GDAL colour interpretations naming a band (:func:`named_by_colour`); a model's R, G, B.
_COLOURS = ("red", "green", "blue")
_COLOUR_LETTER = {"r": "red", "g": "green", "b": "blue"}
_S2_CODE = re.compile(r"^b(\d{1,2}|8a)$")
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


def reflectance_scale(dtype: np.dtype | type | str, path: str | None = None) -> float:
    """Multiplier from stored digital numbers to reflectance in 0-1.

    Float rasters are taken to hold reflectance already (1.0). 16- and 32-bit
    integers follow the Sentinel-2 / Landsat convention of reflectance x 10000
    (1e-4); this is wrong for raw 11/12-bit aerial DNs, which then look dark.
    8-bit rasters are display-stretched imagery, mapped to 0-1 with 1/255.

    Args:
        dtype: the scene's storage type.
        path: the scene, named in the error.

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
        f"{path or 'the scene'}: cannot map {dt} band values to reflectance; convert it to "
        "uint16 (reflectance x 10000) or float32 (reflectance 0-1), e.g. "
        "`gdal_translate -ot Float32` (for complex SAR data, take the amplitude first)"
    )


#: Scales of the storage conventions of :func:`reflectance_scale` for integer types.
_INTEGER_CONVENTIONS = (1e-4, 1.0 / 255.0)


def input_scale(
    dtype: np.dtype | type | str, model_scale: float, imported: bool, path: str | None = None
) -> float | None:
    """The scale (stored value -> model units) to feed a scene stored as ``dtype`` with, or
    None to keep the model's ``model_scale``.

    A scene stored in another convention of :func:`reflectance_scale` than the data the
    model was made for is converted (float reflectance for a model of reflectance x 10000,
    and back; 16-bit reflectance for an 8-bit model). A model brought in with
    ``geoseg import`` (``imported``) declares how the data it was made for stores its
    values, and an integer scene is taken to be stored that way unless that scale is one of
    the integer conventions: with ``--scale 6615`` (a product's own digital numbers) or no
    scale (values as stored), a uint16 or uint8 scene is fed as the import says, not as
    reflectance x 10000 or 0-255 display values.
    """
    scene = reflectance_scale(dtype, path)
    if math.isclose(scene, model_scale, rel_tol=1e-6):
        return None
    integer = np.dtype(dtype).kind in "iu"
    conventional = any(math.isclose(model_scale, s, rel_tol=1e-6) for s in _INTEGER_CONVENTIONS)
    if imported and integer and not conventional:
        return None
    return scene


def band_order_is_guess(
    descriptions: Sequence[str | None],
    colorinterp: Sequence[str],
    overrides: Mapping[str, int] | None,
    sensor: str | None,
) -> bool:
    """True when nothing but a default says which band is red and which is blue.

    That is a scene whose band names say nothing, read without ``--sensor`` and
    without ``--bands red=..``/``blue=..``: either it has no colour interpretation
    (assumed R, G, B) or GDAL's R, G, B on the first three bands, which GDAL writes
    by default for any 3- or 4-band 8-bit GeoTIFF whatever the order really is.
    """
    if sensor is not None or {"red", "blue"} & {r.strip().lower() for r in overrides or {}}:
        return False
    if _roles_from_descriptions(descriptions, force_s2=False)[0]:
        return False
    interp = [str(c).lower().removeprefix("colorinterp.") for c in colorinterp]
    named = {"red", "green", "blue"} & set(interp)
    return interp[:3] == ["red", "green", "blue"] or (not named and len(interp) == 3)


def has_minimum_roles(roles: Iterable[str]) -> bool:
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
    if not has_minimum_roles(roles):
        raise BandMismatchError(
            f"cannot tell which bands of {path} are red, green and blue or NIR (found "
            f"{roles or 'none'} from descriptions {list(descriptions)}); {_FIX}"
        )
    result = BandRoles.from_mapping(roles)
    if result.is_rgb_only:
        warnings.append(f"{path}: {RGB_ONLY_WARNING}")
    return result, warnings


def band_match_keys(
    names: Sequence[str], model_bands: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Keys that match a file's band names to a model's: equal keys are the same band.

    Names compare case- and zero-padding-insensitively (``B2`` is ``B02``; ``R`` is
    ``red``, as :func:`named_by_colour` names a band by its colour). Where every
    model band is a Sentinel-2 code or a role name (``B04``, ``red``, ``swir16``), role
    names on either side are read as the Sentinel-2 band they are (``red`` is ``B04``),
    so a file named red,green,blue,nir feeds a B02,B03,B04,B08 model by name. The
    translation is dropped when it would give one file two bands of the same key.

    Args:
        names: the file's band descriptions, one per band ("" or a number where unnamed).
        model_bands: the checkpoint's input bands, in order.

    Returns:
        ``(file_keys, model_keys)``, one key per name.
    """
    from geoseg.io.raster import canonical_band_name

    plain = [_COLOUR_LETTER.get(k, k) for k in map(canonical_band_name, names)]
    model_plain = [_COLOUR_LETTER.get(k, k) for k in map(canonical_band_name, model_bands)]
    if not all(_S2_CODE.match(b) or b in _S2_BAND_OF_ROLE for b in model_plain):
        return plain, model_plain
    keys = [_S2_BAND_OF_ROLE.get(n, n) for n in plain]
    named = [k for k in keys if k]
    if len(set(named)) != len(named):
        return plain, model_plain
    return keys, [_S2_BAND_OF_ROLE.get(b, b) for b in model_plain]


def named_by_colour(names: Sequence[str], colorinterp: Sequence[str]) -> list[str]:
    """``names`` (:attr:`~geoseg.io.raster.Scene.band_names`), the unnamed ones (their
    number) named ``red``/``green``/``blue`` by their GDAL colour interpretation when the
    file has all three, so an RGB GeoTIFF feeds an ``R,G,B`` model by name (whether that
    interpretation is a guess, :func:`band_order_is_guess` checks apart)."""
    colours = [str(c).lower().removeprefix("colorinterp.") for c in colorinterp]
    if sorted(c for c in colours if c in _COLOURS) != sorted(_COLOURS):
        return list(names)
    return [c if n == str(i + 1) and c in _COLOURS else n for i, (n, c) in
            enumerate(zip(names, colours, strict=True))]  # fmt: skip
