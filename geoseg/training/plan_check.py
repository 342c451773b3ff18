"""Refuse a plan's settings on data unlike the data it was planned on.

A plan's window, normalization, class list and weights follow from its fingerprint
(``provenance.plan``). Given other images or labels (``train --plan P --image X``),
those choices no longer fit: a 13-band float plan silently trained a 2-band radar
model whose "not water" pixels were dropped as nodata. Band count, band names,
dtype, a GSD far off and label values that are no class of the plan refuse; a GSD
off by less than :data:`GSD_REFUSE` warns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg.areas import pixel_size_m
from geoseg.errors import ConfigError
from geoseg.io.raster import open_scene
from geoseg.io.training_data import LABEL_NODATA
from geoseg.resolution import GSD_REFUSE, GSD_WARN, gsd_ratio
from geoseg.types import NODATA_LABEL

__all__ = ["GSD_REFUSE", "GSD_WARN", "UNKNOWN_SHARE", "check_plan_data"]

log = logging.getLogger(__name__)

#: Share of labelled px with values outside the plan's classes that refuses (they would
#: be dropped as nodata); less is left to training's own warning.
UNKNOWN_SHARE = 0.01
#: Side the label rasters are read at (decimated) to see which values they hold, px.
_LABEL_READ_SIDE = 1024


def _bands(names: Sequence[str]) -> str:
    shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"
    return f"{len(names)} band(s) ({shown})"


def _image_mismatch(fp: Mapping[str, Any], images: Sequence[str],
                    bands: Sequence[str] | None) -> tuple[list[str], list[str]]:  # fmt: skip
    """Refusals and warnings from the images' headers against the plan's fingerprint."""
    refuse, warn = [], []
    names = list(fp.get("band_tail_ratio") or {})
    for k, path in enumerate(images):
        scene = open_scene(path, bands)
        here, dtype = list(scene.band_names), str(scene.data.dtype)
        if names and here != names:
            refuse.append(f"{Path(path).name} has {_bands(here)}, the plan {_bands(names)}")
        if fp.get("dtype") and dtype != fp["dtype"]:
            refuse.append(f"{Path(path).name} is {dtype}, the plan {fp['dtype']}")
        if k == 0 and fp.get("gsd_m"):
            h, w = scene.data.shape[1:]
            gsd = pixel_size_m(scene.crs, scene.transform, (int(h), int(w)))
            ratio = gsd_ratio(gsd, fp["gsd_m"])
            what = f"{Path(path).name} has a GSD of {gsd:.3g} m, the plan {fp['gsd_m']:.3g} m"
            if ratio > GSD_REFUSE:
                refuse.append(what)
            elif ratio > GSD_WARN:
                warn.append(f"{what}: its window and margin in px may not fit these objects")
    return refuse, warn


def _label_values(path: str) -> dict[int, int]:
    """Pixels per label value of a (decimated) read of ``path``, nodata left out."""
    with rasterio.open(path) as src:
        shape = (min(src.height, _LABEL_READ_SIDE), min(src.width, _LABEL_READ_SIDE))
        raw = src.read(1, out_shape=shape, masked=True)
    values, counts = np.unique(raw.compressed(), return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True)
            if int(v) not in (LABEL_NODATA, NODATA_LABEL)}  # fmt: skip


def _label_mismatch(labels: Sequence[str], class_ids: Sequence[int]) -> list[str]:
    """Label rasters whose values outside ``class_ids`` hold >= :data:`UNKNOWN_SHARE`."""
    refuse = []
    for path in labels:
        counts = _label_values(path)
        total = sum(counts.values()) or 1
        unknown = {v: n for v, n in counts.items() if v not in class_ids}
        if sum(unknown.values()) / total >= UNKNOWN_SHARE:
            vals = ", ".join(f"{v} ({n / total:.1%})" for v, n in sorted(unknown.items())[:6])
            refuse.append(
                f"{Path(path).name} holds values {vals} of its labelled px that are no class "
                f"of the plan ({', '.join(map(str, class_ids))}; they would be dropped as nodata)"
            )
    return refuse


def check_plan_data(
    plan: str | os.PathLike[str], fingerprint: Mapping[str, Any], images: Sequence[str],
    labels: Sequence[str], bands: Sequence[str] | None, class_ids: Sequence[int] | None,
) -> None:  # fmt: skip
    """Refuse training with ``plan``'s settings on data its fingerprint does not describe.

    Args:
        plan: the plan file (named in the message).
        fingerprint: its ``provenance.plan`` mapping.
        images, labels, bands: the data to train on.
        class_ids: the plan's class ids, or None when the classes were given anew
            (``--classes``): the label values are then not checked.

    Raises:
        ConfigError: band count or names, dtype, a GSD over :data:`GSD_REFUSE` times
            off, or label values outside the plan's classes.
    """
    refuse, warn = _image_mismatch(fingerprint, images, bands)
    if class_ids is not None:
        refuse += _label_mismatch(labels, class_ids)
    for line in warn:
        log.warning("%s: planned on other data: %s", plan, line)
    if refuse:
        raise ConfigError(
            f"{plan}: planned on other data than given ({'; '.join(refuse)}); re-run "
            "`geoseg plan` on this data, or pass --config with explicit values"
        )
