"""The files of a change report: tables, change polygons, images and ``index.html``.

Each writer takes the :class:`~geoseg.change.matrix.TransitionMatrix` that
:func:`geoseg.pipelines.change.change_report` summed, the aligned maps and the
output paths (checked before anything was written), and writes atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.areas import HECTARE_M2, area_method
from geoseg.change.align import AlignedMaps, read_label_map_info
from geoseg.change.matrix import TransitionMatrix
from geoseg.change.normalize_to import map_normalizations, normalization_lines
from geoseg.change.unknown import UnknownValues
from geoseg.change.zones import ZoneCoverage, ZoneMasker
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
from geoseg.report.checks import ChangeWarning, change_warnings, years_between
from geoseg.report.focus import FocusLike, Headline, focus_headline, largest_headlines
from geoseg.report.maps import Grid, MapFigure, crs_name, extent_lines, ground_width_m, scale_bar
from geoseg.report.numbers import AreaFormat, area_decimals
from geoseg.types import ClassSchema

if TYPE_CHECKING:  # change.py imports this module
    from geoseg.pipelines.change import ChangeOptions

__all__ = [
    "report_warnings",
    "write_change_polygons",
    "write_images",
    "write_index",
    "write_tables",
    "write_zone_table",
]


def write_change_polygons(
    raster: Path, output: Path, schema: ClassSchema, opts: ChangeOptions
) -> None:
    """``change.gpkg``: one (multi)polygon per changed patch, with from/to class names and
    areas; patches are :data:`~geoseg.change.mmu.CHANGE_CONNECTIVITY`-connected, as the MMU's."""
    from geoseg.change.mmu import CHANGE_CONNECTIVITY
    from geoseg.io.vectors import write_vectors
    from geoseg.pipelines.vectorize import VectorizeOptions, label_polygons

    k = len(schema)
    changed = [str(i * k + j) for i in range(k) for j in range(k) if i != j]
    vopts = VectorizeOptions(
        classes=changed, chunk=max(opts.chunk, 256), scheduler=opts.scheduler,
        workers=opts.workers, connectivity=CHANGE_CONNECTIVITY,
    )  # fmt: skip
    frame = label_polygons(raster, vopts)
    codes = frame["class_id"].to_numpy(dtype=int)
    frame.insert(1, "from_class", [schema.classes[c // k].name for c in codes])
    frame.insert(2, "to_class", [schema.classes[c % k].name for c in codes])
    write_vectors(frame, output, "gpkg", "change", opts.overwrite)


def write_zone_table(
    zones: ZoneMasker, cover: ZoneCoverage, aligned: AlignedMaps, path: Path, opts: ChangeOptions
) -> None:
    """``transitions_by_aoi.csv``: the transition rows of every AOI feature, each with the
    feature's own area (``aoi_area_ha``) and the share of it the maps' valid pixels cover
    (``aoi_covered_percent``)."""
    rows = []
    for zone, name in enumerate(zones.names):
        m = zones.totals.matrix(aligned.schema.names, zone)
        own = {
            "aoi_area_ha": float(cover.area_m2[zone]) / HECTARE_M2,
            "aoi_covered_percent": 100.0 * float(cover.covered[zone]),
        }
        rows += [{"aoi": name, **r, **own} for r in transition_rows(m)]
    write_csv_rows(path, rows, opts.overwrite)


def _rule_doc(
    m: TransitionMatrix, opts: ChangeOptions, versus: TransitionMatrix | None
) -> dict[str, object]:
    """``transitions.json``'s account of the rule: with the posterior rule, its threshold,
    the uncertain area and what map differencing gives with the same filters."""
    if versus is None:
        return {"rule": opts.rule}
    return {
        "rule": opts.rule, "min_change_prob": opts.threshold,
        "probabilities": _probability_files(opts),
        "uncertain": transition_rows(m)[-2],
        "map_difference": {"changed_area_m2": versus.changed_area_m2,
                           "transitions": transition_rows(versus, nodata=False)},
    }  # fmt: skip


def _probability_files(opts: ChangeOptions) -> list[str]:
    """The absolute paths of the probability files the posterior rule read, in date order."""
    return [str(Path(p).resolve()) for p in opts.probabilities_of or ()]


def write_tables(
    m: TransitionMatrix, aligned: AlignedMaps, paths: dict[str, Path], opts: ChangeOptions,
    unknown: Sequence[UnknownValues] = (), focus: FocusLike | None = None,
    versus: TransitionMatrix | None = None, dated: bool = True,
) -> None:  # fmt: skip
    """``transitions.csv``, ``class_change.csv`` and ``transitions.json`` (with the grid,
    how areas were measured, the values outside the class schema, per map, the
    implausibility warnings of :mod:`geoseg.report.checks` and the rule; ``versus``:
    the map-difference matrix beside a posterior one; ``dated``: the maps' order was
    checked against their dates, else taken as given)."""
    transitions = transition_rows(m)
    classes = class_change_rows(m)
    write_csv_rows(paths["transitions.csv"], transitions, opts.overwrite)
    write_csv_rows(paths["class_change.csv"], classes, opts.overwrite)
    doc = {
        "maps": list(aligned.paths), "dates": list(aligned.dates),
        "time_order": "by date" if dated else "as given (a map has no acquisition date)",
        "crs": aligned.crs.to_string(), "transform": list(aligned.transform)[:6],
        "shape": [aligned.height, aligned.width],
        "area_method": area_method(aligned.crs).description,
        "area_planar": area_method(aligned.crs).planar,
        "unknown_values": [u.to_json() for u in unknown],
        "consistency": opts.consistency, "classes": list(m.names), **_rule_doc(m, opts, versus),
        "transitions": transitions[: len(m.names) ** 2],
        "nodata": transitions[-1], "class_change": classes, "total_area_m2": m.total_area_m2,
        "warnings": [w.to_json() for w in report_warnings(m, aligned, focus, opts.consistency)],
        "normalization": map_normalizations(aligned.paths),  # per map, None if not normalised
    }  # fmt: skip
    write_json(paths["transitions.json"], doc, opts.overwrite)


def report_warnings(
    m: TransitionMatrix, aligned: AlignedMaps, focus: FocusLike | None, consistency: int = 1
) -> list[ChangeWarning]:
    """The plausibility flags of the report (:func:`geoseg.report.checks.change_warnings`)."""
    years = years_between(aligned.dates[0], aligned.dates[-1])
    return change_warnings(m, years, focus, AreaFormat.of(m).text, consistency)


def _unseen_text(consistency: int) -> str:
    """What else the nodata area holds with ``--consistency``: changes whose persistence
    a nodata date (a cloud) hides (:func:`geoseg.change.temporal.persistent_after`)."""
    if consistency <= 1:
        return ""
    return f", or a change one of the last {consistency} dates has no class for (a cloud)"


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
    decimals = area_decimals(AreaFormat.of(m).pixel_m2, HECTARE_M2)
    image = render_transition_chart(
        [b[1] for b in bars], [b[0] for b in bars], [colours[b[2]] for b in bars],
        decimals=decimals,
    )  # fmt: skip
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


def _area_method(m: TransitionMatrix, aligned: AlignedMaps) -> str:
    """How pixel areas were computed: planar in a CRS without a datum (geoseg.areas)."""
    method = area_method(aligned.crs)
    return method.description if method.planar else _ELLIPSOIDAL


_ELLIPSOIDAL = (
    "true ellipsoidal (WGS84) area of every pixel, from its corners, whatever the CRS; "
    "geoseg.areas.pixel_area_m2"
)


def _filters(aligned: AlignedMaps, m: TransitionMatrix, opts: ChangeOptions) -> list[str]:
    """One line per rule that decided which pixels count as change, on or off."""
    areas = AreaFormat.of(m)
    out = [
        _rule_line(m, opts, areas),
        *_posterior_lines(aligned, opts),
        f"minimum mapping unit: {opts.mmu_ha:g} ha (8-connected patches of one transition "
        "under this true area are reverted to no change)" if opts.mmu_ha is not None else
        "minimum mapping unit: none (every changed pixel counts; --mmu-ha sets one)",
        f"temporal consistency: a change counts only where the new class persists over the "
        f"last {opts.consistency} dates" if opts.consistency > 1 else
        "temporal consistency: off (--consistency N, with at least N + 1 dates, sets it)",
        f"nodata: pixels where either date has no class{_unseen_text(opts.consistency)} are "
        f"left out ({areas.text(m.nodata_area_m2)}, {m.nodata_pixels:,} px)",
    ]  # fmt: skip
    out += normalization_lines(aligned.paths, map_normalizations(aligned.paths))
    resampled = [p for p, r in zip(aligned.paths, aligned.resampled, strict=True) if r]
    if resampled:
        out.append(
            f"resampled (nearest neighbour) onto the first map's grid: {', '.join(resampled)}"
        )
    if opts.aoi:
        field = f", features named by {opts.aoi_field}" if opts.aoi_field else ""
        out.append(f"areas per AOI feature of {opts.aoi}{field}: transitions_by_aoi.csv")
    return out


def _rule_line(m: TransitionMatrix, opts: ChangeOptions, areas: AreaFormat) -> str:
    """How pixels were called change: map differencing, or the posterior rule's split."""
    if m.uncertain_area_m2 is None:
        return (
            "rule: map differencing (every pixel whose class differs between the maps is "
            "change; --rule posterior uses class probabilities)"
        )
    t = opts.threshold
    return (
        f"rule: posterior (change where P(change) = 1 - sum_c p1(c) p2(c) >= {t:g}, no change "
        f"where it is <= {1 - t:g}, uncertain between: {areas.text(m.uncertain_area_m2)}, "
        f"{m.uncertain_pixels:,} px, counted neither as change nor as no change; assumes "
        "independent classification errors between the dates)"
    )


def _posterior_lines(aligned: AlignedMaps, opts: ChangeOptions) -> list[str]:
    """With the posterior rule: the probability files it read and, with 3+ maps, which
    dates it compares."""
    if opts.rule != "posterior":
        return []
    files = _probability_files(opts)
    out = [
        "class probabilities read: " + "; ".join(
            f"{m} ({d or 'date unknown'}): {p}"
            for m, d, p in zip(aligned.paths, aligned.dates, files, strict=True)
        )
    ]  # fmt: skip
    if len(aligned.paths) > 2:
        out.append(
            "posterior rule between the first and last date; middle dates used only by "
            "--consistency"
        )
    return out


def _accuracy_note(opts: ChangeOptions, counts: np.ndarray | None) -> str:
    if counts is not None:
        return (
            f"Error-adjusted areas with 95 % confidence intervals from {int(counts.sum()):,} "
            f"labelled reference samples ({opts.reference}; Olofsson et al. 2014); "
            "see accuracy.csv."
        )
    if opts.samples_se:
        return (
            "Map areas, not error-adjusted. Label the points of samples.gpkg (its reference "
            "column) and rerun with --reference samples.gpkg for error-adjusted areas with "
            "95 % confidence intervals."
        )
    return (
        "Map areas, not error-adjusted; collect samples with --samples-se, label them and "
        "rerun with --reference for error-adjusted areas with 95 % confidence intervals."
    )


def _figure(png: Path, caption: str, grid: Grid, legend: list[tuple[str, Colour]]) -> MapFigure:
    """A map thumbnail shown ``_MAP_PX`` wide (three side by side), with its scale bar."""
    bar = scale_bar(ground_width_m(grid), _MAP_PX, target_px=100)
    return MapFigure(png.name, caption, tuple(legend), bar, _MAP_PX)


_MAP_PX = 300
Colour = tuple[int, int, int]


def _figures(
    m: TransitionMatrix, aligned: AlignedMaps, codes: ClassSchema, paths: dict[str, Path]
) -> list[MapFigure]:
    """Before, after and change thumbnails with the classes each shows."""
    colours = [c.colour for c in aligned.schema.classes]
    k = len(m.names)

    def present(counts: np.ndarray) -> list[tuple[str, Colour]]:
        return [(n, colours[i]) for i, n in enumerate(m.names) if counts[i] > 0]

    change = [("unchanged", codes.classes[0].colour)] if np.diag(m.pixels).any() else []
    change += [
        (f"changed to {n}", codes.classes[((j + 1) % k) * k + j].colour)
        for j, n in enumerate(m.names) if m.gross_gain_pixels()[j] > 0
    ]  # fmt: skip
    if m.uncertain_pixels > 0:
        change.append(("uncertain", codes.classes[k * k].colour))
    grids = [read_label_map_info(p) for p in (aligned.paths[0], aligned.paths[-1])]
    before, after = (Grid(g.crs, g.transform, g.height, g.width) for g in grids)
    here = Grid(aligned.crs, aligned.transform, aligned.height, aligned.width)
    return [
        _figure(paths["before.png"], f"first date ({aligned.dates[0] or 'date unknown'})",
                before, present(m.pixels.sum(axis=1))),
        _figure(paths["after.png"], f"last date ({aligned.dates[-1] or 'date unknown'})",
                after, present(m.pixels.sum(axis=0))),
        _figure(paths["change.png"], "change", here, change),
    ]  # fmt: skip


def _headline(
    m: TransitionMatrix, focus: FocusLike | None, counts: np.ndarray | None
) -> list[Headline]:
    return [focus_headline(m, focus, counts)] if focus else largest_headlines(m, 3, counts)


def _comparison(
    m: TransitionMatrix, versus: TransitionMatrix | None, focus: FocusLike | None,
    areas: AreaFormat,
) -> list[str]:  # fmt: skip
    """With the posterior rule: its figures beside those of map differencing."""
    if versus is None:
        return []
    out = []
    if focus is not None:
        post, diff = focus_headline(m, focus), focus_headline(versus, focus)
        out.append(
            f"{focus.name}: {areas.text(post.map_m2)} by the posterior rule, "
            f"{areas.text(diff.map_m2)} by map differencing of the same maps (--rule map, "
            "same filters)"
        )
    out.append(
        f"all change: {areas.text(m.changed_area_m2)} by the posterior rule, with "
        f"{areas.text(m.uncertain_area_m2 or 0.0)} uncertain (neither change nor no change); "
        f"{areas.text(versus.changed_area_m2)} by map differencing"
    )
    return out


def write_index(
    m: TransitionMatrix,
    aligned: AlignedMaps,
    codes: ClassSchema,
    paths: dict[str, Path],
    opts: ChangeOptions,
    focus: FocusLike | None = None,
    counts: np.ndarray | None = None,
    versus: TransitionMatrix | None = None,
    notes: Sequence[str] = (),
) -> None:
    """``index.html``: the report page that ties the tables and images together.

    Args:
        codes: the classes of change.tif (:func:`geoseg.pipelines.change_codes.change_schema`).
        focus: the study's focus (its figure heads the page), or None for the
            largest transitions.
        counts: ``(C, C)`` reference sample counts over change.tif's codes, or None.
        versus: with the posterior rule, the map-difference matrix (both figures
            are shown under the headline).
        notes: warnings of the steps that made the maps, listed after the report's own.
    """
    areas = AreaFormat.of(m)
    grid = Grid(aligned.crs, aligned.transform, aligned.height, aligned.width)
    rows = [
        (r["from"], r["to"], r["area_m2"], r["pixels"])
        for r in transition_rows(m, nodata=False)
        if r["pixels"] > 0
    ]
    gain, loss, net = m.gross_gain_m2(), m.gross_loss_m2(), m.net_change_m2()
    facts = ReportFacts(
        maps=aligned.paths, dates=aligned.dates, crs=crs_name(aligned.crs),
        extent=extent_lines(grid), pixel_size=aligned.pixel_size, units=_units(aligned),
        shape=(aligned.height, aligned.width), area_method=_area_method(m, aligned),
        filters=_filters(aligned, m, opts), headline=_headline(m, focus, counts),
        focus=focus is not None, accuracy_note=_accuracy_note(opts, counts),
        warnings=[*(w.text for w in report_warnings(m, aligned, focus, opts.consistency)), *notes],
        areas=areas, table=rows,
        class_rows=[(c, float(gain[i]), float(loss[i]), float(net[i]))
                    for i, c in enumerate(m.names)],
        nodata=(m.nodata_area_m2, m.nodata_pixels), figures=_figures(m, aligned, codes, paths),
        uncertain=None if m.uncertain_area_m2 is None else (m.uncertain_area_m2,
                                                            m.uncertain_pixels),
        comparison=_comparison(m, versus, focus, areas),
        images=[("transitions.png", "changed area by transition")],
        files=[p.name for name, p in paths.items() if name != "index.html"],
    )  # fmt: skip
    with atomic_output(paths["index.html"], opts.overwrite) as tmp:
        tmp.write_text(render_index(facts), encoding="utf-8")
