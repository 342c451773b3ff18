"""The ``geoseg`` command line: thin commands that parse, call a pipeline and print.

Any :class:`~geoseg.errors.GeosegError` becomes one line on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from geoseg import __version__
from geoseg.errors import GeosegError

__all__ = ["main"]

log = logging.getLogger("geoseg")


class _Group(click.Group):
    """Maps geoseg errors to exit code 2 with a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GeosegError as exc:
            if ctx.meta.get("geoseg.debug"):
                raise
            click.echo(f"geoseg: error: {exc}", err=True)
            ctx.exit(2)


def _parse_bands(text: str | None) -> tuple[list[str] | None, dict[str, int]]:
    """``"3,2,1"`` -> selection; ``"red=3,nir=4"`` -> 1-based roles for ``spectral``."""
    if not text:
        return None, {}
    items = [s.strip() for s in text.split(",") if s.strip()]
    if all("=" in s for s in items):
        roles = {}
        for s in items:
            role, _, num = s.partition("=")
            if not num.strip().isdigit():
                raise click.BadParameter(f"{s!r}: expected role=band-number, e.g. red=3")
            roles[role.strip().lower()] = int(num)
        return None, roles
    if any("=" in s for s in items):
        raise click.BadParameter("use either a list (3,2,1) or roles (red=3,nir=4), not both")
    return items, {}


class _TextProgress:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4)
            click.echo(f"\r{self.label} [{bar:<25}] {pct:3d}%", err=True, nl=pct >= 100)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log what geoseg does.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Segment satellite and aerial scenes into georeferenced maps."""
    ctx.meta["geoseg.debug"] = debug
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="geoseg: %(levelname)s: %(message)s")
    logging.captureWarnings(True)


@cli.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option("-m", "--model", required=True, help="'spectral' or a .safetensors checkpoint.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--confidence", is_flag=True, help="Add a confidence band (254 = certain).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), help="PNG quicklook.")
@click.option("--bands", help="Band numbers/names (3,2,1,B08) or spectral roles (red=3,nir=4).")
@click.option(
    "--sensor", help="Band layout for spectral: sentinel2, landsat8, landsat9, rgbnir, rgb."
)
@click.option("--assume-crs", help="CRS for a scene without one, e.g. EPSG:32633.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--window", type=int, help="Window side in px (default: the model's).")
@click.option("--margin", type=int, help="Margin in px trimmed from each window side.")
@click.option("--blend", type=click.Choice(["trim", "hann"]), default="trim", show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--chunk", type=int, default=1024, show_default=True, help="Dask chunk side in px.")
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, sync, local (LocalCluster) or tcp://host:port.")  # fmt: skip
@click.option("--workers", type=int, help="Threads or worker processes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def predict(scene: str, model: str, output: Path, progress: bool | None, bands: str | None,
            preview: Path | None, **kw: Any) -> None:  # fmt: skip
    """Segment SCENE into a label COG."""
    from geoseg.pipelines.predict import PredictOptions, predict_scene

    selection, roles = _parse_bands(bands)
    opts = PredictOptions(bands=selection, band_roles=roles, preview=preview, **kw)
    show = sys.stderr.isatty() if progress is None else progress
    result = predict_scene(scene, model, output, opts, _TextProgress("predict") if show else None)
    click.echo(f"wrote {result.output} ({result.valid_pixels} labelled pixels)")
    if result.preview:
        click.echo(f"wrote {result.preview}")


@cli.command()
@click.argument("checkpoints", nargs=-1, type=click.Path(dir_okay=False, path_type=str))
def models(checkpoints: Sequence[str]) -> None:
    """List the models geoseg can use, or describe CHECKPOINTS."""
    from geoseg.pipelines.describe import describe_checkpoint, describe_models

    for line in describe_models() if not checkpoints else []:
        click.echo(line)
    for path in checkpoints:
        for line in describe_checkpoint(path):
            click.echo(line)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
def info(path: str) -> None:
    """Describe a raster (georeferencing, bands, classes) or a checkpoint."""
    from geoseg.pipelines.describe import describe_checkpoint, describe_raster

    lines = describe_checkpoint(path) if path.endswith(".safetensors") else describe_raster(path)
    for line in lines:
        click.echo(line)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="geoseg")
