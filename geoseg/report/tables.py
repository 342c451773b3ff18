"""Rows of the change report's tables and their CSV writer (atomic, fixed decimals)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.areas import ACRE_M2, HECTARE_M2
from geoseg.change.matrix import KM2_M2, TransitionMatrix
from geoseg.io.atomic import atomic_output

__all__ = ["area_fields", "class_change_rows", "transition_rows", "write_csv_rows"]


def area_fields(area_m2: float, pixels: int) -> dict[str, Any]:
    """One area in every unit the report uses, and its pixel count."""
    return {
        "area_ha": area_m2 / HECTARE_M2,
        "area_acres": area_m2 / ACRE_M2,
        "area_km2": area_m2 / KM2_M2,
        "area_m2": area_m2,
        "pixels": pixels,
    }


def transition_rows(m: TransitionMatrix, nodata: bool = True) -> list[dict[str, Any]]:
    """One row per (from, to) pair, then (posterior rule) an ``uncertain`` row, then
    (with ``nodata``) a ``nodata`` row. All rows together cover the grid's area."""
    rows = [
        {"from": a, "to": b, **area_fields(float(m.area_m2[i, j]), int(m.pixels[i, j]))}
        for i, a in enumerate(m.names)
        for j, b in enumerate(m.names)
    ]
    if nodata and m.uncertain_area_m2 is not None:
        rows.append(
            {"from": "uncertain", "to": "uncertain",
             **area_fields(m.uncertain_area_m2, m.uncertain_pixels)}
        )  # fmt: skip
    if nodata:
        rows.append(
            {"from": "nodata", "to": "nodata", **area_fields(m.nodata_area_m2, m.nodata_pixels)}
        )
    return rows


def class_change_rows(m: TransitionMatrix) -> list[dict[str, Any]]:
    """Per class: gross gain, gross loss and net change (gain - loss) in ha, acres, km², px."""
    gain, loss, net = m.gross_gain_m2(), m.gross_loss_m2(), m.net_change_m2()
    gain_px, loss_px = m.gross_gain_pixels(), m.gross_loss_pixels()
    return [
        {"class": name, "gain_ha": gain[i] / HECTARE_M2, "loss_ha": loss[i] / HECTARE_M2,
         "net_ha": net[i] / HECTARE_M2, "gain_acres": gain[i] / ACRE_M2,
         "loss_acres": loss[i] / ACRE_M2, "net_acres": net[i] / ACRE_M2,
         "gain_km2": gain[i] / KM2_M2, "loss_km2": loss[i] / KM2_M2, "net_km2": net[i] / KM2_M2,
         "gain_pixels": int(gain_px[i]), "loss_pixels": int(loss_px[i]),
         "net_pixels": int(gain_px[i] - loss_px[i])}
        for i, name in enumerate(m.names)
    ]  # fmt: skip


def _fmt(value: Any) -> Any:
    """CSV numbers: floats with 6 decimals (stable text whatever the chunk size)."""
    return f"{value:.6f}" if isinstance(value, float | np.floating) else value


def write_csv_rows(
    path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], overwrite: bool = False
) -> None:
    """Write dict rows (keys of the first row as header) as CSV, floats with 6 decimals.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_output(path, overwrite) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _fmt(v) for key, v in row.items()})
