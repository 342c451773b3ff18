"""The ``geoseg`` command group, its error handling and the helpers its commands share.

Any :class:`~geoseg.errors.GeosegError` becomes one line on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoseg import __version__
from geoseg.errors import GeosegError
from geoseg.types import parse_band_list

if TYPE_CHECKING:  # geoseg.areas imports pyproj: not needed to start the CLI
    from geoseg.areas import AreaMethod

__all__ = [
    "AT_LEAST_ONE", "NOT_NEGATIVE", "NO_BAND_ROLES", "FiniteRange", "area_note", "band_selection",
    "cli", "dask_options", "echo_area_note", "explicit", "main", "outputs", "parse_bands",
    "parse_map", "progress_bar", "prompt_layer_options", "quiet_dask_logs", "window_options",
]  # fmt: skip

log = logging.getLogger("geoseg")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler): stops the run as Ctrl-C does,
    so its outputs are rolled back and its lock released (exit code 143)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


class _Group(click.Group):
    """Maps geoseg errors to exit code 2 with a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            if ctx.meta.get("geoseg.debug"):
                raise
            how = "terminated" if isinstance(exc, Terminated) else "interrupted"
            click.echo(f"geoseg: {how} ({self._interrupt_note(ctx)})", err=True)
            ctx.exit(143 if isinstance(exc, Terminated) else 130)
        except GeosegError as exc:
            if ctx.meta.get("geoseg.debug"):
                raise
            click.echo(f"geoseg: error: {exc}", err=True)
            ctx.exit(2)

    def _interrupt_note(self, ctx: click.Context) -> str:
        """What a rerun does: the command's own note (``ctx.meta``), else whether it resumes."""
        note = ctx.meta.get("geoseg.interrupted")
        if note:
            return str(note)
        cmd = self.get_command(ctx, ctx.invoked_subcommand or "")
        if cmd is not None and any(p.name == "resume" for p in cmd.params):
            return "rerun with --resume to continue"
        return "it does not resume: rerun it to start again"


#: Counts and sizes (--chunk, --workers, --window, --batch-size, --epochs, ...).
AT_LEAST_ONE = click.IntRange(min=1)
#: Margins and seeds.
NOT_NEGATIVE = click.IntRange(min=0)


class FiniteRange(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses ``nan`` and ``inf`` (they pass a range)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def area_note(method: AreaMethod) -> str:
    """The line saying how areas were measured (``change``, ``vectorize``, ``predict --vector``)."""
    return f"note: areas are {method.description}"


def echo_area_note(method: AreaMethod) -> None:
    """Print :func:`area_note` where areas are planar (a local CRS without a datum)."""
    if method.planar:
        click.echo(area_note(method))


def parse_bands(text: str | None) -> tuple[list[str] | None, dict[str, int]]:
    """``"3,2,1"`` -> selection; ``"red=3,nir=4"`` -> 1-based roles for ``spectral``."""
    items = list(parse_band_list(text) or ())
    if not items:
        return None, {}
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


#: The refusal of band roles where a model takes a list of bands (SAM).
NO_BAND_ROLES = "--bands takes band numbers or names here, e.g. 3,2,1"


def band_selection(text: str | None) -> list[str] | None:
    """``--bands`` of a SAM command (prompt, track, evaluate): :func:`parse_bands`'s list.

    Raises:
        click.BadParameter: band roles (``red=3``: ``spectral``'s form).
    """
    selection, roles = parse_bands(text)
    if roles:
        raise click.BadParameter(NO_BAND_ROLES)
    return selection


class _TextProgress:
    """A progress bar on stderr: redrawn in place on a terminal, every 10 % in a log."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._last = -1
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        step = pct if self._tty else pct - pct % 10
        if step != self._last:
            self._last = step
            bar = "#" * (step // 4)
            line = f"{self.label} [{bar:<25}] {step:3d}%"
            click.echo(f"\r{line}" if self._tty else line, err=True, nl=not self._tty or pct >= 100)


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
    quiet_dask_logs(verbose)


def quiet_dask_logs(verbose: bool) -> None:
    """Keep Dask distributed's own logs behind ``-v``.

    It logs every worker and connection at INFO and, when a worker dies or on
    Ctrl-C, warnings and full tracebacks of faults it recovers from (the result is
    right; a fault it cannot recover from reaches geoseg as an error). The config
    reaches the worker processes and a later import of distributed; the logger
    levels cover a distributed imported already.
    """
    import dask.config

    level = "info" if verbose else "critical"
    names = (
        "distributed", "distributed.client", "distributed.nanny", "distributed.scheduler",
        "distributed.worker", "distributed.core", "tornado", "tornado.application",
    )  # fmt: skip
    levels = {**dask.config.get("logging", {}), **dict.fromkeys(names, level)}
    dask.config.set({"logging": levels})
    for name in names:
        logging.getLogger(name).setLevel(level.upper())


def dask_options(chunk: int = 1024, chunk_help: str = "Dask chunk side in px.") -> Any:
    """Decorator adding ``--chunk``, ``--scheduler`` and ``--workers`` (every dask command)."""
    options = [
        click.option("--chunk", type=AT_LEAST_ONE, default=chunk, show_default=True,
                     help=chunk_help),
        click.option("--scheduler", default="threads", show_default=True,
                     help="threads, sync, local (LocalCluster) or tcp://host:port."),
        click.option("--workers", type=AT_LEAST_ONE, help="Threads or worker processes."),
    ]  # fmt: skip
    return _all(options)


def window_options() -> Any:
    """Decorator adding ``--window``, ``--margin``, ``--batch-size`` and ``--ignore-gsd``
    (predict, evaluate, calibrate)."""
    return _all([
        click.option("--window", type=AT_LEAST_ONE,
                     help="Window side in px (default: the model's)."),
        click.option("--margin", type=NOT_NEGATIVE,
                     help="Margin in px trimmed from each window side (default: the model's)."),
        click.option("--batch-size", type=AT_LEAST_ONE,
                     help="Windows per model call [default: GPU 32, CPU 4]."),
        click.option("--ignore-gsd", is_flag=True,
                     help="Run a model on a scene whose pixel size is over 4x off its own."),
    ])  # fmt: skip


#: ``--tta`` choices (:data:`geoseg.tiling.tta.TTA_MODES`, which is not imported here:
#: geoseg.tiling loads dask, and the CLI starts without it).
TTA_CHOICES = ("none", "flips", "d4")


def tta_option() -> Any:
    """Decorator adding ``--tta`` (predict, evaluate)."""
    return click.option(
        "--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
        help="Test-time augmentation of semantic and change models: average the class "
        "probabilities over the 4 flips or the 8 rotations/flips of each window "
        "(4x / 8x the model time).",
    )  # fmt: skip


def prompt_layer_options(scenes: str) -> Any:
    """Decorator adding ``--points``, ``--point`` and ``--prompts-crs`` (prompt, track);
    ``scenes``: whose CRS a ``--point`` without one is in (``the scene's``)."""
    return _all([
        click.option("--points", help="Point layer: field label 1/0 (positive/negative), "
                     "prompt_id groups points of one object."),
        click.option("--point", help=f"One positive point X,Y[,CRS] (CRS default: {scenes})."),
        click.option("--prompts-crs",
                     help="CRS of a prompt layer that declares none (or 'raster')."),
    ])  # fmt: skip


def _all(options: Sequence[Any]) -> Any:
    """One decorator applying ``options`` in order (the first is listed first in --help)."""

    def add(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return add


def progress_bar(label: str, progress: bool | None) -> _TextProgress | None:
    """A :class:`_TextProgress` when asked for (``--progress``) or, by default, on a terminal."""
    show = sys.stderr.isatty() if progress is None else progress
    return _TextProgress(label) if show else None


def parse_map(text: str | None) -> dict[int, int] | None:
    """``"2=1,3=1,8=3"`` -> ``{2: 1, 3: 1, 8: 3}``."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[int(key)] = int(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected from=to class ids, e.g. 2=1") from None
        if not sep:
            raise click.BadParameter(f"{item!r}: expected from=to class ids, e.g. 2=1")
    return out


def explicit(ctx: click.Context, names: Sequence[str]) -> dict[str, Any]:
    """Options the user typed (so a --config file's values are not overridden by defaults)."""
    source = click.core.ParameterSource
    return {
        n: ctx.params[n]
        for n in names
        if ctx.get_parameter_source(n) not in (source.DEFAULT, source.DEFAULT_MAP, None)
    }


def outputs(
    files: Sequence[str] = (),
    folder: str | None = None,
    folder_files: Sequence[str] = (),
    inputs: Sequence[str] = (),
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: the command's outputs are one run (:func:`geoseg.io.outputs.output_run`).

    Args:
        files: options naming output files (checked up front; the first is locked;
            ``vector`` stands for every file of a vector layer).
        folder: option naming an output folder (checked, locked, made by the run).
        folder_files: the files the command may write into ``folder``.
        inputs: options naming inputs (an output may not be one).
    """

    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def run(*args: Any, **kw: Any) -> None:
            from geoseg.io.outputs import output_run
            from geoseg.io.vectors_formats import vector_files

            given = [Path(kw[n]) for n in inputs if kw.get(n) is not None]
            with output_run(bool(kw.get("overwrite")), given) as outs:
                paths = [(n, Path(kw[n])) for n in files if kw.get(n) is not None]
                if paths:
                    outs.lock(paths[0][1])
                for name, path in paths:
                    outs.add(vector_files(path) if name == "vector" else [path])
                if folder is not None:
                    outs.add_folder(Path(kw[folder]), folder_files)
                    outs.make_folder(Path(kw[folder]))
                command(*args, **kw)

        return run

    return wrap


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; SIGTERM stops a run as Ctrl-C does (:class:`Terminated`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    cli.main(args=list(argv) if argv is not None else None, prog_name="geoseg")
