"""Weights-free land cover from band indices (the ``spectral`` model).

Five classes (:data:`SPECTRAL_SCHEMA`): water 0, vegetation 1, bare 2, built-up 3,
cloud 4. Each pixel is classified on its own from reflectance ``DN * scale`` (see
:func:`geoseg.models.bands.reflectance_scale`): no training, no context, the
same answer for any tiling.
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

from collections.abc import Mapping

import numpy as np

from geoseg.errors import BandMismatchError, GeosegError
from geoseg.models.bands import BandRoles, has_minimum_roles
from geoseg.types import ClassInfo, ClassSchema

__all__ = [
    "SPECTRAL_SCHEMA",
    "SpectralPredictor",
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
        scale: reflectance per digital number (see :func:`geoseg.models.bands.reflectance_scale`).

    Attributes:
        schema: :data:`SPECTRAL_SCHEMA` (water, vegetation, bare, built-up, cloud).
        bands: the roles used, in band order, e.g. ``("blue", "green", "red", "nir")``.
    """

    def __init__(self, roles: BandRoles, scale: float) -> None:
        if not np.isfinite(scale) or scale <= 0:
            raise GeosegError(f"reflectance scale must be a positive number, got {scale}")
        if not has_minimum_roles(roles.names):
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
