"""``geoseg track``: objects prompted on one date, followed through the others (SAM 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.app import area_note, band_selection, cli, progress_bar, prompt_layer_options


@cli.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-m",
    "--model",
    required=True,
    help="A SAM 2 video checkpoint (geoseg import SAM2_VIDEO_FOLDER -o sam2.safetensors ...).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder: one instance COG per date (DATE tag or file stem) and areas.csv.",
)
@click.option("--boxes", help="Polygon layer: each feature's bounding box is one object.")
@prompt_layer_options("the scenes'")
@click.option(
    "--prompt-date",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The date the prompts point at: its place in the list of SCENES.",
)
@click.option("--bands", help="Scene bands feeding the model, e.g. 3,2,1 (default: by name).")
@click.option("--assume-crs", help="CRS for scenes without one, e.g. EPSG:32633.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option(
    "--ignore-gsd",
    is_flag=True,
    help="Run on a scene whose pixel size is over 4x off the model's recorded GSD.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def track(scenes: tuple[str, ...], model: str, output: Path, bands: str | None,
          progress: bool | None, **kw: Any) -> None:  # fmt: skip
    """Follow the objects that boxes or points show on one date through SCENES (SAM 2).

    SCENES are the dates of one place, in time order (a date on another grid is
    resampled onto the first date's, with a warning). Each object reads only its
    own window on every date; SAM 2's memory carries it from the prompt date to
    the others. Outputs: one instance COG per date (band 2: the prompt's id, the
    same on every date) and areas.csv (true area in ha per object and date).
    """
    from geoseg.pipelines.track import TrackOptions, track_scenes

    opts = TrackOptions(bands=band_selection(bands), **kw)
    result = track_scenes(scenes, model, output, opts, progress_bar("track", progress))
    if result.area_method.planar:
        click.echo(area_note(result.area_method))
    if not result.dated:
        from geoseg.pipelines.time_order import undated_note

        click.echo(undated_note(scenes, "scenes"))
    lost = f", {result.lost} object-dates without a mask" if result.lost else ""
    click.echo(f"wrote {len(result.rasters)} dates to {output} ({result.objects} objects from "
               f"{result.windows} windows{lost})")  # fmt: skip
    click.echo(f"wrote {result.areas}")
