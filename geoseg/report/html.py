"""The ``index.html`` of a change report: method, grid, dates and the tables and images."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ReportFacts", "render_index"]


@dataclass(frozen=True)
class ReportFacts:
    """What the report page states.

    Attributes:
        maps: the input label maps, in date order.
        dates: the ``DATE`` tag of each map (None where absent).
        crs: the grid's CRS, as text (e.g. ``EPSG:32633``).
        pixel_size: ``(x, y)`` pixel size in CRS units.
        units: the CRS's linear unit (``metre``, ``degree``, ...).
        shape: ``(height, width)`` of the analysed grid in pixels.
        resampled: maps that were resampled (nearest) onto the first map's grid.
        consistency: dates a change had to persist for (1 = no filter).
        class_names: the ``K`` class names.
        table: rows of ``(from, to, area_ha, area_acres, area_km2, pixels)`` to show.
        class_rows: rows of ``(class, gain_ha, loss_ha, net_ha)``.
        nodata: ``(area_ha, pixels)`` of the nodata line.
        images: ``(file, caption)`` of the PNGs beside the page.
        files: other outputs to link.
    """

    maps: Sequence[str]
    dates: Sequence[str | None]
    crs: str
    pixel_size: tuple[float, float]
    units: str
    shape: tuple[int, int]
    resampled: Sequence[str]
    consistency: int
    class_names: Sequence[str]
    table: Sequence[tuple[str, str, float, float, float, int]]
    class_rows: Sequence[tuple[str, float, float, float]]
    nodata: tuple[float, int]
    images: Sequence[tuple[str, str]]
    files: Sequence[str]


_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px}"
    "td.n{text-align:right}img{max-width:100%;border:1px solid #ddd}"
    "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
)

_METHOD = (
    "Transition areas are sums of true ellipsoidal (WGS84) pixel areas, computed per pixel "
    "from the pixel corners whatever the CRS (geoseg.areas.pixel_area_m2), accumulated "
    "exactly so they do not depend on chunk size. A pixel counts as nodata when either "
    "date has no class there. Change codes in change.tif are from_index &times; K + "
    "to_index; unchanged pixels are grey. Areas are map areas: with a reference sample, "
    "use the error-adjusted estimator (Olofsson et al. 2014) for unbiased areas."
)


def _esc(value: object) -> str:
    return html.escape(str(value))


def _rows(rows: Sequence[Sequence[object]]) -> str:
    out = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{v:,.4f}</td>' if isinstance(v, float)
            else f'<td class="n">{v:,}</td>' if isinstance(v, int)
            else f"<td>{_esc(v)}</td>"
            for v in row
        )  # fmt: skip
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out)


def render_index(facts: ReportFacts) -> str:
    """The page as an HTML string (UTF-8, no external resources)."""
    dates = [
        f"<li>{_esc(m)}: {_esc(d or 'date unknown (no DATE tag)')}</li>"
        for m, d in zip(facts.maps, facts.dates, strict=True)
    ]
    resampled = (
        f"<p>Resampled (nearest neighbour) onto the first map's grid: "
        f"{_esc(', '.join(facts.resampled))}.</p>" if facts.resampled else ""
    )  # fmt: skip
    figures = "".join(
        f'<figure><img src="{_esc(f)}" alt="{_esc(c)}"><figcaption>{_esc(c)}</figcaption></figure>'
        for f, c in facts.images
    )
    links = "".join(f'<li><a href="{_esc(f)}">{_esc(f)}</a></li>' for f in facts.files)
    consistency = (
        f"<p>Temporal consistency: a change counts only if the new class persists over the "
        f"last {facts.consistency} dates.</p>" if facts.consistency > 1 else ""
    )  # fmt: skip
    head = "<tr><th>from</th><th>to</th><th>ha</th><th>acres</th><th>km²</th><th>pixels</th></tr>"
    class_head = "<tr><th>class</th><th>gain ha</th><th>loss ha</th><th>net ha</th></tr>"
    nodata_ha, nodata_px = facts.nodata
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geoseg change report</title>
<style>{_STYLE}</style></head><body>
<h1>Land-cover change report</h1>
<h2>Inputs</h2><ul>{"".join(dates)}</ul>
<p>Grid: CRS {_esc(facts.crs)}, pixel size {facts.pixel_size[0]:g} &times;
{facts.pixel_size[1]:g} {_esc(facts.units)}, {facts.shape[1]:,} &times; {facts.shape[0]:,} px.</p>
{resampled}{consistency}
<h2>Method</h2><p>{_METHOD}</p>
<h2>Figures</h2>{figures}
<h2>Transitions</h2><table>{head}
{_rows(facts.table)}
<tr><td colspan="2">nodata (either date)</td><td class="n">{nodata_ha:,.4f}</td>
<td></td><td></td><td class="n">{nodata_px:,}</td></tr></table>
<h2>Gross and net change per class</h2><table>{class_head}
{_rows(facts.class_rows)}</table>
<h2>Files</h2><ul>{links}</ul>
</body></html>
"""
