"""``geoseg prompt``: objects from point and box prompts with a SAM checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.app import (
    AT_LEAST_ONE,
    NO_BAND_ROLES,
    NOT_NEGATIVE,
    area_note,
    band_selection,
    cli,
    outputs,
    progress_bar,
    prompt_layer_options,
)


@cli.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-m",
    "--model",
    required=True,
    help="A SAM / SAM 2 checkpoint (geoseg import SAM_FOLDER|sam.pth|sam2.1.pt -o "
    "sam.safetensors --bands R,G,B).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instance COG: band 1 class (1 object, 0 background), band 2 prompt id.",
)
@click.option("--boxes", help="Polygon layer: each feature's bounding box is one prompt "
              "(refines the polygons: their IoU with the objects is reported).")  # fmt: skip
@click.option(
    "--interior-points",
    type=NOT_NEGATIVE,
    default=0,
    show_default=True,
    help="With --boxes: add up to N positive points well inside each polygon.",
)
@prompt_layer_options("the scene's")
@click.option(
    "--vector",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also one polygon per prompt: .gpkg, .shp, .parquet, .fgb or .geojson.",
)
@click.option(
    "--multimask",
    type=click.Choice(["best", "all"]),
    default="best",
    show_default=True,
    help="all: polygons of SAM's three candidates (field candidate); the raster keeps the best.",
)
@click.option("--bands", help="Scene bands feeding the model, e.g. 3,2,1 (default: by name).")
@click.option("--assume-crs", help="CRS for a scene without one, e.g. EPSG:32633.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--batch-size", type=AT_LEAST_ONE, help="Windows per encoder call [GPU 16, CPU 4].")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option(
    "--ignore-gsd",
    is_flag=True,
    help="Run on a scene whose pixel size is over 4x off the model's recorded GSD.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@outputs(("output", "vector"), inputs=("scene",))
def prompt(scene: str, model: str, output: Path, vector: Path | None, bands: str | None,
           progress: bool | None, **kw: Any) -> None:  # fmt: skip
    """Segment the objects that points or boxes point at in SCENE (SAM).

    Each prompt reads only its own window (box plus context, decimated when the
    box is larger than the encoder's input); prompts on one window share one
    encoding. Overlapping objects: the higher predicted IoU wins the pixel; the
    polygons keep every object whole.
    """
    from geoseg.pipelines.predict import check_geotiff_name
    from geoseg.pipelines.prompt import PromptOptions, prompt_scene

    opts = PromptOptions(bands=band_selection(bands), **kw)
    check_geotiff_name(output, "-o")
    result = prompt_scene(scene, model, output, opts, vector, progress_bar("prompt", progress))
    if result.vector is not None and result.area_method.planar:
        click.echo(area_note(result.area_method))
    skipped = f", {result.outside} outside the scene" if result.outside else ""
    skipped += f", {result.nodata} on nodata" if result.nodata else ""
    skipped += f", {result.empty} empty" if result.empty else ""
    click.echo(f"wrote {result.output} ({result.objects} objects from {result.windows} "
               f"windows{skipped})")  # fmt: skip
    if result.iou is not None:
        click.echo(f"input {result.iou.line()}")
    if result.vector is not None:
        click.echo(f"wrote {result.vector}")


def evaluate_prompts(model: str | None, image: str | None, labels: str, output: Path,
                     opts: Any, interior_points: int, labels_crs: str | None) -> None:  # fmt: skip
    """``geoseg evaluate`` of a SAM checkpoint: one box prompt per reference polygon
    (``opts``: evaluate's :class:`~geoseg.pipelines.predict.PredictOptions`)."""
    from geoseg.pipelines.evaluate_prompts import evaluate_prompt_model
    from geoseg.pipelines.prompt import PromptOptions

    if model is None or image is None:
        raise click.UsageError("give -m SAM_MODEL and --image IMAGE (a SAM takes no --prediction)")
    if opts.band_roles:
        raise click.BadParameter(NO_BAND_ROLES)
    popts = PromptOptions(
        boxes=labels, interior_points=interior_points, prompts_crs=labels_crs,
        crs_option="--labels-crs", bands=opts.bands,
        device=opts.device, batch_size=opts.batch_size, assume_crs=opts.assume_crs,
        overwrite=opts.overwrite, ignore_gsd=opts.ignore_gsd,
    )  # fmt: skip
    result = evaluate_prompt_model(model, image, labels, output, popts)
    apart = [f"{result.outside} outside the image"] * bool(result.outside)
    apart += [f"{result.nodata} on its nodata"] * bool(result.nodata)
    unscored = f", {' and '.join(apart)} not scored" if apart else ""
    click.echo(f"{result.iou.line('reference polygons')}{unscored}")
    for path in result.files:
        click.echo(f"wrote {path}")
