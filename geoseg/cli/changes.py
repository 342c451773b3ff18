"""``geoseg change``, ``stack`` and ``run``: maps across dates and YAML workflows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from geoseg.cli.app import (
    AT_LEAST_ONE,
    FiniteRange,
    cli,
    dask_options,
    echo_area_note,
    progress_bar,
)

#: The option that takes several values (one probability file per map).
PROBABILITIES_OF = "--probabilities-of"


def _spread_values(args: list[str], option: str, takes_value: Callable[[str], bool]) -> list[str]:
    """``args`` with the values after ``option`` (given once) each preceded by ``option``.

    ``--probabilities-of p1.tif p2.tif`` becomes ``--probabilities-of p1.tif
    --probabilities-of p2.tif``: the values run up to the next option (or ``--``). When
    the command line has no positional argument besides them (``--probabilities-of p1
    p2 m1 m2``), the first half are the option's: it takes one value per map. Given
    twice or more, the option takes one value each time (click's own ``multiple``).

    Args:
        args: the command line after the command's name.
        option: the option's long name.
        takes_value: whether a given option (``-o``, ``--rule``) takes a value.
    """
    hits = [i for i, a in enumerate(args) if a.split("=", 1)[0] == option]
    if len(hits) != 1 or "--" in args[: hits[0]]:
        return args
    at = hits[0]
    glued = "=" in args[at]
    if not glued and at + 1 == len(args):
        return args  # click says the option needs a value
    end = at + (1 if glued else 2)
    while end < len(args) and not args[end].startswith("-"):
        end += 1
    values = [args[at].split("=", 1)[1]] if glued else [args[at + 1]]
    values += args[at + (1 if glued else 2) : end]
    loose = _positionals(args[:at], takes_value) + _positionals(args[end:], takes_value)
    mine = len(values) if loose or len(values) % 2 else len(values) // 2
    spread = [token for v in values[:mine] for token in (option, v)]
    return [*args[:at], *spread, *values[mine:], *args[end:]]


def _positionals(args: Sequence[str], takes_value: Callable[[str], bool]) -> int:
    """How many of ``args`` are positional arguments (not options or their values)."""
    count, skip = 0, False
    for i, token in enumerate(args):
        if skip:
            skip = False
        elif token == "--":
            return count + len(args) - i - 1
        elif token.startswith("-") and len(token) > 1:
            skip = "=" not in token and takes_value(token)
        else:
            count += 1
    return count


class _SpreadCommand(click.Command):
    """A command whose :data:`PROBABILITIES_OF` option takes several values at once
    (:func:`_spread_values`), through click's public ``Command.parse_args``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        valued = {
            name for p in self.params if isinstance(p, click.Option)
            and not p.is_flag and not p.count for name in p.opts
        }  # fmt: skip
        return super().parse_args(
            ctx, _spread_values(list(args), PROBABILITIES_OF, valued.__contains__)
        )


@cli.command(cls=_SpreadCommand)
@click.argument("maps", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the tables, change.tif, PNGs and index.html.")  # fmt: skip
@click.option("--consistency", type=AT_LEAST_ONE, default=1, show_default=True,
              help="With 3+ maps: a change must persist over the last N dates.")  # fmt: skip
@click.option("--mmu-ha", type=FiniteRange(min=0), help="Drop change patches under this area (ha).")
@click.option("--aoi", type=click.Path(dir_okay=False, path_type=str),
              help="Polygon layer: one transition table per feature.")  # fmt: skip
@click.option("--aoi-field", help="AOI attribute naming each feature (default: its number).")
@click.option("--aoi-crs", help="The AOI's CRS when its file declares none (or a wrong one), "
              "e.g. EPSG:32633; 'raster': the maps' CRS.")  # fmt: skip
@click.option("--samples-se", type=FiniteRange(min=0, max=1, min_open=True, max_open=True),
              help="Write samples.gpkg for this SE of overall accuracy, e.g. 0.01.")  # fmt: skip
@click.option("--reference", type=click.Path(dir_okay=False, path_type=str),
              help="Labelled samples.gpkg: error-adjusted areas with 95% CIs.")  # fmt: skip
@click.option("--rule", type=click.Choice(["map", "posterior"]), default="map",
              show_default=True, help="map: difference the label maps; posterior: count change "
              "only where the class probabilities make it likely, and report the uncertain "
              "area apart.")  # fmt: skip
@click.option("--min-change-prob", type=FiniteRange(min=0.5, max=1),
              help="Posterior rule: change where P(change) >= this, no change where "
              "P(change) <= 1 - this, uncertain between (default 0.7).")  # fmt: skip
@click.option(PROBABILITIES_OF, "probabilities_of", multiple=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Posterior rule: the maps' probability files in date order, one per map: "
              "--probabilities-of p1.tif p2.tif (up to the next option) or the option once "
              "per file (default: the files the maps' tags name).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@dask_options()
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def change(
    maps: Sequence[str], output: Path, progress: bool | None,
    probabilities_of: tuple[str, ...], **kw: Any,
) -> None:  # fmt: skip
    """Compare label MAPS (first date first): transition areas, change raster, report."""
    from geoseg.errors import ConfigError
    from geoseg.pipelines.change import ChangeOptions, change_report

    if len(maps) < 2:
        raise click.BadParameter("give at least two label maps (before and after)")
    if kw["min_change_prob"] is not None and kw["rule"] != "posterior":
        raise ConfigError("--min-change-prob is read by --rule posterior only; add it")
    opts = ChangeOptions(**kw, probabilities_of=probabilities_of or None)
    result = change_report(maps, output, opts, progress_bar("change", progress))
    m = result.matrix
    echo_area_note(result.area_method)
    if not result.dated:
        from geoseg.pipelines.time_order import undated_note

        click.echo(undated_note(maps, "maps"))
    mapped = float(m.area_m2.sum()) + (m.uncertain_area_m2 or 0.0)
    click.echo(f"changed area {m.changed_area_m2 / 1e4:,.2f} ha of {mapped / 1e4:,.2f} ha mapped")
    if result.map_difference is not None:
        click.echo(
            f"uncertain {(m.uncertain_area_m2 or 0.0) / 1e4:,.2f} ha (neither change nor no "
            f"change); map differencing: {result.map_difference.changed_area_m2 / 1e4:,.2f} ha "
            "changed"
        )
    for path in result.files:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("dates", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--normalize", type=click.Choice(["irmad"]),
              help="Map dates 2..n radiometrically onto date 1 (per-band gain/offset fitted "
              "on IR-MAD invariant pixels).")  # fmt: skip
def stack(dates: Sequence[str], output: Path, overwrite: bool, normalize: str | None) -> None:
    """Stack the bands of DATES (first date first) into one raster for change models."""
    from geoseg.errors import GeosegError
    from geoseg.io.stack import stack_dates, stack_normalized
    from geoseg.pipelines.time_order import scenes_in_time_order

    if len(dates) < 2:
        raise GeosegError(
            f"stack needs at least two dates, got {len(dates)} ({', '.join(dates)}); give the "
            "dates oldest first"
        )
    scenes_in_time_order(dates)  # a stack newest first turns a change model's answer around

    if normalize is None:
        click.echo(f"wrote {stack_dates(dates, output, overwrite)}")
        return
    from geoseg.change.normalize_to import fit_text

    result = stack_normalized(dates, output, normalize, overwrite)
    for fit, clipped in zip(result.fits, result.clipped, strict=True):
        line = fit_text(result.bands, fit.gains, fit.offsets, fit.invariant_share, fit.sampled)
        click.echo(f"date {fit.date} ({dates[fit.date - 1]}): {line}; {clipped:,} values clipped")
    click.echo(f"wrote {result.path}")


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=str))
@click.option("--root", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False),
              help="Folder the workflow paths are relative to (and may not leave).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def run(workflow: str, root: str, overwrite: bool, progress: bool | None) -> None:
    """Run a workflow file: predict every date, compare the maps, report."""
    from geoseg.pipelines.workflow import load_workflow, run_workflow

    wf = load_workflow(workflow, root)
    try:
        result = run_workflow(wf, overwrite, progress_bar(wf.name, progress))
    except KeyboardInterrupt:
        click.get_current_context().meta["geoseg.interrupted"] = _interrupted_note(wf)
        raise
    for line in result.normalized:
        click.echo(line)
    from geoseg.pipelines.time_order import scenes_in_time_order, undated_note

    if not scenes_in_time_order(wf.scenes):  # as `geoseg change` and `track` say it
        click.echo(undated_note(wf.scenes, "scenes"))
    for path in (*result.maps, *result.report):
        click.echo(f"wrote {path}")
    if result.summary:
        s = result.summary
        click.echo(f"{s['focus']}: {_figures(s)}")
        for zone in s.get("by_aoi", []):
            click.echo(
                f"  {zone['aoi']}: {zone['area_ha']:,.2f} ha ({zone['area_acres']:,.2f} acres) "
                f"of its {zone['aoi_area_ha']:,.2f} ha, {zone['aoi_covered_percent']:.1f} % "
                "covered by the maps"
            )


def _interrupted_note(wf: Any) -> str:
    """What a rerun of an interrupted workflow does: resume the maps from their kept chunks
    (the workflow key ``predict: {resume: true}``; ``run`` has no --resume), or start again."""
    kept = sorted(wf.output.glob(".*.parts")) if wf.output.is_dir() else []
    if not kept:
        return "nothing was kept to resume: rerun it to start again"
    where = f"finished chunks are kept in {', '.join(map(str, kept))}"
    if wf.predict.get("resume"):
        return f"{where}: rerun it to continue (predict: {{resume: true}})"
    return f"{where}: set predict: {{resume: true}} in {wf.path} and rerun it to continue"


def _figures(summary: dict[str, Any]) -> str:
    """The focus area of ``summary.json``; with the posterior rule also the uncertain area
    and map differencing's figure, as the summary gives them."""
    head = f"{summary['area_ha']:,.2f} ha ({summary['area_acres']:,.2f} acres)"
    if "map_difference" not in summary:
        return head
    diff, uncertain = summary["map_difference"], summary["uncertain"]
    return (
        f"{head} by the posterior rule; map differencing {diff['area_ha']:,.2f} ha "
        f"({diff['area_acres']:,.2f} acres); uncertain {uncertain['area_ha']:,.2f} ha "
        f"({uncertain['area_acres']:,.2f} acres, all classes: neither change nor no change)"
    )
