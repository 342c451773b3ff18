"""The ``index.html`` of a change report, in the order an analyst reads it.

Top: the headline figure (the study's focus, or the largest transitions), with
its 95 % confidence interval when a reference sample was given and a plain
statement when not; then warnings for implausible results. Below: where the
maps lie (CRS by name, extent, pixel size), the filters applied, the maps with
legends and scale bars, the tables (areas rounded to one pixel's area, see
:mod:`geoseg.report.numbers`), the method and every file produced.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from geoseg.report.focus import Headline
from geoseg.report.maps import MapFigure
from geoseg.report.numbers import AreaFormat

__all__ = ["ReportFacts", "render_index"]


@dataclass(frozen=True)
class ReportFacts:
    """What the report page states.

    Attributes:
        maps: the input label maps, in date order.
        dates: the ``DATE`` tag of each map (None where absent).
        crs: the grid's CRS by name (e.g. ``WGS 84 / UTM zone 33N (EPSG:32633)``).
        extent: lines giving the grid's extent (CRS units, then lon/lat).
        pixel_size: ``(x, y)`` pixel size in CRS units.
        units: the CRS's linear unit (``metre``, ``degree``, ...).
        shape: ``(height, width)`` of the analysed grid in pixels.
        area_method: how pixel areas were computed (one sentence).
        filters: one line per filter or rule applied to the change codes.
        headline: the focus figure (one) or the largest transitions.
        focus: True when ``headline`` is a workflow's focus.
        accuracy_note: the statement on error adjustment shown under the headline.
        warnings: sentences on implausible results (:mod:`geoseg.report.checks`).
        areas: formats areas (rounded to one pixel).
        table: rows of ``(from, to, area_m2, pixels)`` to show.
        class_rows: rows of ``(class, gain_m2, loss_m2, net_m2)``.
        nodata: ``(area_m2, pixels)`` of the nodata line.
        figures: the map images with legends and scale bars.
        images: ``(file, caption)`` of other PNGs beside the page (charts).
        files: every file the report wrote beside the page.
        uncertain: ``(area_m2, pixels)`` the posterior rule left uncertain, or None
            (map differencing).
        comparison: sentences under the headline setting the posterior rule's
            figures beside map differencing's.
    """

    maps: Sequence[str]
    dates: Sequence[str | None]
    crs: str
    extent: Sequence[str]
    pixel_size: tuple[float, float]
    units: str
    shape: tuple[int, int]
    area_method: str
    filters: Sequence[str]
    headline: Sequence[Headline]
    focus: bool
    accuracy_note: str
    warnings: Sequence[str]
    areas: AreaFormat
    table: Sequence[tuple[str, str, float, int]]
    class_rows: Sequence[tuple[str, float, float, float]]
    nodata: tuple[float, int]
    figures: Sequence[MapFigure]
    images: Sequence[tuple[str, str]]
    files: Sequence[str]
    uncertain: tuple[float, int] | None = None
    comparison: Sequence[str] = ()


_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px}"
    "td.n{text-align:right}img{border:1px solid #ddd;image-rendering:pixelated}"
    "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
    "#headline{border:2px solid #333;padding:0.5em 1em;margin:1em 0}"
    ".figure{font-size:1.6em;margin:0.2em 0}.value{font-weight:bold}"
    ".warning{background:#fff3cd;border:2px solid #c90;padding:0.5em 1em;margin:1em 0}"
    ".legend{list-style:none;padding:0;margin:0.3em 0}"
    ".legend li{display:inline-block;margin-right:1em}"
    ".swatch{display:inline-block;width:1em;height:1em;border:1px solid #555;"
    "vertical-align:middle;margin-right:0.3em}"
    ".scale{margin:0.3em 0}.bar{display:inline-block;height:6px;border:1px solid #000;"
    "border-top:none;vertical-align:middle;margin-right:0.4em}"
)

_METHOD = (
    "Transition areas are sums of per-pixel ground areas ({area_method}), accumulated "
    "exactly so they do not depend on chunk size. A pixel counts as nodata when either "
    "date has no class there. Change codes in change.tif are from_index &times; K + "
    "to_index; unchanged pixels are grey. Areas are map areas: with a reference sample, "
    "the error-adjusted estimator (Olofsson et al. 2014) gives unbiased areas. Areas on "
    "this page are rounded to about one pixel's area ({pixel}); the CSV and JSON tables "
    "keep full precision."
)


def _esc(value: object) -> str:
    return html.escape(str(value))


def _arrow(label: str) -> str:
    return _esc(label.replace(" -> ", " → "))


def _area_cells(areas: AreaFormat, m2: float) -> str:
    return "".join(f'<td class="n">{areas.number(m2, u)}</td>' for u in ("ha", "acres", "km²"))


def _headline_figure(areas: AreaFormat, h: Headline) -> str:
    if h.adjusted_m2 is None or h.ci95_m2 is None:
        value = areas.text(h.map_m2)
        extra = f"map area; {areas.text(h.map_m2, 'acres')}, {h.pixels:,} pixels"
    else:
        value = f"{areas.number(h.adjusted_m2)} ± {areas.text(h.ci95_m2)}"
        extra = (
            f"error-adjusted, ± 95 % confidence interval; map area {areas.text(h.map_m2)}, "
            f"{h.pixels:,} pixels"
        )
    detail = f"{_arrow(h.detail)}: " if h.detail else ""
    return (
        f'<p class="figure"><span class="label">{_arrow(h.label)}</span> '
        f'<span class="value">{_esc(value)}</span></p><p>{detail}{_esc(extra)}</p>'
    )


def _headline(facts: ReportFacts) -> str:
    if facts.focus:
        body = "".join(_headline_figure(facts.areas, h) for h in facts.headline)
    elif facts.headline:
        body = "<h2>Largest changes</h2>" + "".join(
            _headline_figure(facts.areas, h) for h in facts.headline
        )
    else:
        body = '<p class="figure"><span class="value">No change</span> between the dates.</p>'
    note = f'<p class="note">{_esc(facts.accuracy_note)}</p>'
    versus = "".join(f"<li>{_arrow(line)}</li>" for line in facts.comparison)
    rule = f'<ul id="rules">{versus}</ul>' if versus else ""
    return f'<section id="headline">{body}{rule}{note}</section>'


def _warnings(warnings: Sequence[str]) -> str:
    items = "".join(f"<li>{_arrow(w)}</li>" for w in warnings)
    return (
        f'<section class="warning"><h2>Implausible results</h2><ul>{items}</ul></section>'
        if warnings else ""
    )  # fmt: skip


def _figure(fig: MapFigure) -> str:
    swatches = "".join(
        f'<li><span class="swatch" style="background:rgb{tuple(rgb)}"></span>{_arrow(name)}</li>'
        for name, rgb in fig.legend
    )
    scale = (
        f'<div class="scale"><span class="bar" style="width:{fig.scale[0]}px"></span>'
        f"{_esc(fig.scale[1])}</div>" if fig.scale else
        '<div class="scale">no scale bar: the CRS has no known linear unit</div>'
    )  # fmt: skip
    return (
        f'<figure class="map" style="width:{fig.width_px}px"><img src="{_esc(fig.file)}" '
        f'alt="{_esc(fig.caption)}" width="{fig.width_px}"><figcaption>{_esc(fig.caption)}{scale}'
        f'<ul class="legend">{swatches}</ul></figcaption></figure>'
    )


def _tables(facts: ReportFacts) -> str:
    a = facts.areas
    head = "<tr><th>from</th><th>to</th><th>ha</th><th>acres</th><th>km²</th><th>pixels</th></tr>"
    rows = "".join(
        f"<tr><td>{_esc(f)}</td><td>{_esc(t)}</td>{_area_cells(a, m2)}"
        f'<td class="n">{px:,}</td></tr>'
        for f, t, m2, px in facts.table
    )
    nodata_m2, nodata_px = facts.nodata
    if facts.uncertain is not None:
        rows += (
            f'<tr><td colspan="2">uncertain (posterior rule)</td>'
            f'{_area_cells(a, facts.uncertain[0])}<td class="n">{facts.uncertain[1]:,}</td></tr>'
        )
    nodata = (
        f'<tr><td colspan="2">nodata (either date)</td>{_area_cells(a, nodata_m2)}'
        f'<td class="n">{nodata_px:,}</td></tr>'
    )
    class_rows = "".join(
        f'<tr><td>{_esc(c)}</td><td class="n">{a.number(g)}</td><td class="n">{a.number(lo)}'
        f'</td><td class="n">{a.signed(n)}</td></tr>'
        for c, g, lo, n in facts.class_rows
    )
    return (
        f"<h2>Transitions</h2><table>{head}{rows}{nodata}</table>"
        "<h2>Gross and net change per class</h2><table><tr><th>class</th><th>gain ha</th>"
        f"<th>loss ha</th><th>net ha</th></tr>{class_rows}</table>"
    )


def _grid(facts: ReportFacts) -> str:
    dates = "".join(
        f"<li>{_esc(m)}: {_esc(d or 'date unknown (no DATE tag)')}</li>"
        for m, d in zip(facts.maps, facts.dates, strict=True)
    )
    extent = "".join(f"<li>{_esc(line)}</li>" for line in facts.extent)
    filters = "".join(f"<li>{_esc(f)}</li>" for f in facts.filters)
    return (
        f"<h2>Inputs</h2><ul>{dates}</ul>"
        f'<h2>Grid</h2><ul id="grid"><li>CRS: {_esc(facts.crs)}</li>'
        f"<li>pixel size {facts.pixel_size[0]:g} &times; {facts.pixel_size[1]:g} "
        f"{_esc(facts.units)}, {facts.shape[1]:,} &times; {facts.shape[0]:,} px</li>"
        f"<li>extent: <ul>{extent}</ul></li></ul>"
        f'<h2>Filters applied</h2><ul id="filters">{filters}</ul>'
    )


def render_index(facts: ReportFacts) -> str:
    """The page as an HTML string (UTF-8, no external resources)."""
    maps = "".join(_figure(f) for f in facts.figures)
    charts = "".join(
        f'<figure><img src="{_esc(f)}" alt="{_esc(c)}"><figcaption>{_esc(c)}</figcaption></figure>'
        for f, c in facts.images
    )
    links = "".join(f'<li><a href="{_esc(f)}">{_esc(f)}</a></li>' for f in facts.files)
    method = _METHOD.format(
        area_method=_esc(facts.area_method), pixel=f"{facts.areas.pixel_m2:,.3g} m²"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geoseg change report</title>
<style>{_STYLE}</style></head><body>
<h1>Land-cover change report</h1>
{_headline(facts)}
{_warnings(facts.warnings)}
{_grid(facts)}
<h2>Maps</h2>{maps}
{charts}
{_tables(facts)}
<h2>Method</h2><p>{method}</p>
<h2>Files</h2><ul id="files">{links}</ul>
</body></html>
"""
