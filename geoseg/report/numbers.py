"""Areas as text, rounded to what the pixel size supports.

A map area is a count of pixels, so it is not known to better than about one
pixel's area: the report gives areas with the decimals whose last digit is
closest to one pixel (10 m pixels, 0.01 ha: 2 decimals of a hectare; 30 m
pixels, 0.09 ha: 1 decimal; 250 m pixels, 6.25 ha: tens of hectares). The CSV and
JSON tables keep full precision for further computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geoseg.areas import ACRE_M2, HECTARE_M2
from geoseg.change.matrix import KM2_M2, TransitionMatrix

__all__ = ["UNIT_M2", "AreaFormat", "area_decimals"]

#: Square metres per report unit.
UNIT_M2 = {"ha": HECTARE_M2, "acres": ACRE_M2, "km²": KM2_M2, "m²": 1.0}


def area_decimals(pixel_m2: float, unit_m2: float) -> int:
    """Decimals whose last digit is the power of ten nearest one pixel's area in the unit.

    Negative for pixels larger than 10 units (rounds to tens, hundreds, ...);
    2 when the pixel area is unknown (0 or not finite).
    """
    if not math.isfinite(pixel_m2) or pixel_m2 <= 0:
        return 2
    return round(-math.log10(pixel_m2 / unit_m2))


@dataclass(frozen=True)
class AreaFormat:
    """Formats areas (m²) in a unit, rounded to one pixel's area.

    Attributes:
        pixel_m2: the mean ground area of one pixel of the grid (m²).
    """

    pixel_m2: float

    @classmethod
    def of(cls, m: TransitionMatrix) -> AreaFormat:
        """The mean pixel area of the grid of ``m`` (uncertain and nodata pixels included)."""
        pixels = int(m.pixels.sum()) + m.uncertain_pixels + m.nodata_pixels
        return cls(m.total_area_m2 / pixels if pixels else 0.0)

    def number(self, m2: float, unit: str = "ha") -> str:
        """``m2`` in ``unit`` (a key of :data:`UNIT_M2`), thousands separated, e.g. ``1,034.2``."""
        unit_m2 = UNIT_M2[unit]
        d = area_decimals(self.pixel_m2, unit_m2)
        value = round(m2 / unit_m2, d) + 0.0  # + 0.0 turns -0.0 into 0.0
        return f"{value:,.{max(d, 0)}f}"

    def text(self, m2: float, unit: str = "ha") -> str:
        """``m2`` in ``unit`` with the unit, e.g. ``418.54 ha``."""
        return f"{self.number(m2, unit)} {unit}"

    def signed(self, m2: float, unit: str = "ha") -> str:
        """Like :meth:`number` with an explicit sign for gains, e.g. ``+369.75``."""
        number = self.number(m2, unit)
        return f"+{number}" if float(number.replace(",", "")) > 0 else number
