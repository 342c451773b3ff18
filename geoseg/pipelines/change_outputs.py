"""The files of a change report: tables, change polygons, images and ``index.html``.

Each writer takes the :class:`~geoseg.change.matrix.TransitionMatrix` that
:func:`geoseg.pipelines.change.change_report` summed, the aligned maps and the
output paths (checked before anything was written), and writes atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.areas import HECTARE_M2
from geoseg.change.align import AlignedMaps
from geoseg.change.matrix import TransitionMatrix
from geoseg.change.zones import ZoneMasker
from geoseg.io.atomic import atomic_output
from geoseg.io.preview import write_label_preview
from geoseg.io.reports import write_json
from geoseg.report import (
    ReportFacts,
    class_change_rows,
    render_index,
    render_transition_chart,
    transition_rows,
    write_csv_rows,
)
from geoseg.types import ClassSchema

if TYPE_CHECKING:  # change.py imports this module
    from geoseg.pipelines.change import ChangeOptions

__all__ = [
    "write_change_polygons",
    "write_images",
    "write_index",
    "write_tables",
    "write_zone_table",
]


def write_change_polygons(
    raster: Path, output: Path, schema: ClassSchema, opts: ChangeOptions
) -> None:
    """``change.gpkg``: one polygon per changed patch, with from/to class names and areas."""
    from geoseg.io.vectors import write_vectors
    from geoseg.pipelines.vectorize import VectorizeOptions, label_polygons

    k = len(schema)
    changed = [str(i * k + j) for i in range(k) for j in range(k) if i != j]
    vopts = VectorizeOptions(
        classes=changed, chunk=max(opts.chunk, 256), scheduler=opts.scheduler, workers=opts.workers
    )
    frame = label_polygons(raster, vopts)
    codes = frame["class_id"].to_numpy(dtype=int)
    frame.insert(1, "from_class", [schema.classes[c // k].name for c in codes])
    frame.insert(2, "to_class", [schema.classes[c % k].name for c in codes])
    write_vectors(frame, output, "gpkg", "change", opts.overwrite)


def write_zone_table(
    zones: ZoneMasker, aligned: AlignedMaps, path: Path, opts: ChangeOptions
) -> None:
    """``transitions_by_aoi.csv``: the transition rows of every AOI feature."""
    rows = []
    for zone, name in enumerate(zones.names):
        m = zones.totals.matrix(aligned.schema.names, zone)
        rows += [{"aoi": name, **r} for r in transition_rows(m)]
    write_csv_rows(path, rows, opts.overwrite)


def write_tables(
    m: TransitionMatrix, aligned: AlignedMaps, paths: dict[str, Path], opts: ChangeOptions
) -> None:
    """``transitions.csv``, ``class_change.csv`` and ``transitions.json`` (with the grid)."""
    transitions = transition_rows(m)
    classes = class_change_rows(m)
    write_csv_rows(paths["transitions.csv"], transitions, opts.overwrite)
    write_csv_rows(paths["class_change.csv"], classes, opts.overwrite)
    doc = {
        "maps": list(aligned.paths), "dates": list(aligned.dates),
        "crs": aligned.crs.to_string(), "transform": list(aligned.transform)[:6],
        "shape": [aligned.height, aligned.width],
        "area_method": "ellipsoidal (WGS84) area of every pixel, geoseg.areas.pixel_area_m2",
        "consistency": opts.consistency, "classes": list(m.names),
        "transitions": transitions[:-1], "nodata": transitions[-1], "class_change": classes,
        "total_area_m2": m.total_area_m2,
    }  # fmt: skip
    write_json(paths["transitions.json"], doc, opts.overwrite)


def write_images(
    m: TransitionMatrix,
    aligned: AlignedMaps,
    codes: ClassSchema,
    paths: dict[str, Path],
    opts: ChangeOptions,
) -> None:
    """``transitions.png`` (the 20 largest changes, ha) and the three map thumbnails."""
    k = len(m.names)
    colours = {c.id: c.colour for c in codes.classes}
    bars = sorted(
        ((float(m.area_m2[i, j]) / HECTARE_M2, f"{m.names[i]} -> {m.names[j]}", i * k + j)
         for i in range(k) for j in range(k) if i != j and m.pixels[i, j] > 0),
        reverse=True,
    )[:20]  # fmt: skip
    image = render_transition_chart(
        [b[1] for b in bars], [b[0] for b in bars], [colours[b[2]] for b in bars]
    )
    with atomic_output(paths["transitions.png"], opts.overwrite) as tmp:
        image.save(tmp, format="PNG")
    # write_label_preview overwrites; the outputs were checked before anything was written
    write_label_preview(aligned.paths[0], paths["before.png"], opts.thumbnail_px)
    write_label_preview(aligned.paths[-1], paths["after.png"], opts.thumbnail_px)
    write_label_preview(paths["change.tif"], paths["change.png"], opts.thumbnail_px)


def _units(aligned: AlignedMaps) -> str:
    """Name of the grid's linear unit, for the report page."""
    if aligned.crs.is_geographic:
        return "degree"
    return str(aligned.crs.linear_units or "CRS units")


def write_index(
    m: TransitionMatrix, aligned: AlignedMaps, paths: dict[str, Path], opts: ChangeOptions
) -> None:
    """``index.html``: the report page that ties the tables and images together."""
    rows = [
        (r["from"], r["to"], r["area_ha"], r["area_acres"], r["area_km2"], r["pixels"])
        for r in transition_rows(m, nodata=False)
        if r["pixels"] > 0
    ]
    class_rows = [
        (r["class"], r["gain_ha"], r["loss_ha"], r["net_ha"]) for r in class_change_rows(m)
    ]
    facts = ReportFacts(
        maps=aligned.paths, dates=aligned.dates, crs=aligned.crs.to_string(),
        pixel_size=aligned.pixel_size, units=_units(aligned), shape=(aligned.height, aligned.width),
        resampled=[p for p, r in zip(aligned.paths, aligned.resampled, strict=True) if r],
        consistency=opts.consistency, class_names=m.names, table=rows,
        class_rows=[(c, float(g), float(lo), float(n)) for c, g, lo, n in class_rows],
        nodata=(m.nodata_area_m2 / HECTARE_M2, m.nodata_pixels),
        images=[("before.png", "first date"), ("after.png", "last date"),
                ("change.png", "change (grey = unchanged)"),
                ("transitions.png", "changed area by transition")],
        files=["transitions.csv", "class_change.csv", "transitions.json", "change.tif",
               *(["transitions_by_aoi.csv"] if opts.aoi else [])],
    )  # fmt: skip
    with atomic_output(paths["index.html"], opts.overwrite) as tmp:
        tmp.write_text(render_index(facts), encoding="utf-8")
