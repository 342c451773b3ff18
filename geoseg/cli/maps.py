"""``geoseg predict`` and ``geoseg vectorize``: scenes to label maps, maps to polygons."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoseg.cli.app import (
    AT_LEAST_ONE,
    FiniteRange,
    area_note,
    cli,
    dask_options,
    echo_area_note,
    outputs,
    parse_bands,
    progress_bar,
    tta_option,
    window_options,
)
from geoseg.models.registry import predict_outputs

if TYPE_CHECKING:
    from geoseg.pipelines.predict import PredictOptions
    from geoseg.pipelines.vectorize import VectorizeOptions
    from geoseg.tiling.execute import Progress


@cli.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option("-m", "--model", required=True, help="'spectral' or a .safetensors checkpoint.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--confidence", is_flag=True, help="Add a confidence band (254 = certain).")
@click.option("--probabilities", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write each class's probability (one band per class, 0-254, "
              "255 = nodata) as this COG, for `geoseg change --rule posterior`.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same job.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), help="PNG quicklook.")
@click.option("--bands", help="Band numbers/names (3,2,1,B08) or spectral roles (red=3,nir=4).")
@click.option(
    "--sensor", help="Band layout for spectral: sentinel2, landsat8, landsat9, rgbnir, rgb."
)
@click.option("--assume-crs", help="CRS for a scene without one, e.g. EPSG:32633.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@window_options()
@click.option("--blend", type=click.Choice(["trim", "hann"]), default="trim", show_default=True)
@tta_option()
@dask_options()
@click.option("--gpus", type=AT_LEAST_ONE, help="Run on N GPUs (dask-cuda, one worker per GPU).")
@click.option("--torch-threads", type=AT_LEAST_ONE, help="Torch threads per model call (CPU).")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="Model arithmetic: auto = fp16 on a GPU, fp32 on the CPU.",
)
@click.option("--vector", type=click.Path(dir_okay=False, path_type=Path),
              help="Also vectorize the map: .gpkg, .shp, .parquet, .fgb or .geojson.")  # fmt: skip
@click.option("--task", type=click.Choice(tuple(predict_outputs())),
              help="instance: object ids (COG band 1 class, band 2 id); panoptic: also stuff. "
              "Default: the checkpoint's own task.")  # fmt: skip
@click.option("--panoptic", type=click.Path(dir_okay=False, path_type=Path),
              help="With an instance model: also write a panoptic COG (class, id).")  # fmt: skip
@click.option("--stuff-labels", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Panoptic from two models: a label map of the same scene from a semantic "
              "model (`geoseg predict`) gives the stuff; objects come from -m.")  # fmt: skip
@click.option("--points-per-side", type=AT_LEAST_ONE,
              help="SAM with --task instance (segment everything): point prompts per window "
              "side (default 16).")  # fmt: skip
@click.option("--mask-clouds", type=click.Path(dir_okay=False, path_type=str),
              help="Cloud model (e.g. an imported ukis-csmask ONNX): its cloud and shadow "
              "pixels become nodata, so `geoseg change` does not count them.")  # fmt: skip
@click.option("--normalize-dates", type=click.Choice(["irmad"]),
              help="Change models: map the stacked dates 2..n onto date 1 first "
              "(as `geoseg stack --normalize`).")  # fmt: skip
@click.option("--normalize-to", type=click.Path(dir_okay=False, path_type=str),
              help="Another date of the same place, on the same grid (usually the earliest; "
              "a later one is warned about): map SCENE onto its radiometry first (IR-MAD), "
              "for change between land-cover maps; give every date the same one.")  # fmt: skip
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@outputs(("output", "preview", "vector", "panoptic", "probabilities"), inputs=("scene",))
def predict(scene: str, model: str, output: Path, progress: bool | None, bands: str | None,
            preview: Path | None, vector: Path | None, task: str | None,
            panoptic: Path | None, stuff_labels: str | None, **kw: Any) -> None:  # fmt: skip
    """Segment SCENE into a label COG (or an instance / panoptic COG)."""
    # instances and vectorize (geopandas, shapely, pyogrio: ~45 MB) only when asked for
    from geoseg.pipelines.predict import PredictOptions
    from geoseg.pipelines.tasks import predict_task

    selection, roles = parse_bands(bands)
    gpus, points_per_side = kw.pop("gpus"), kw.pop("points_per_side")
    if gpus:
        kw.update(scheduler="cuda", workers=gpus, device="cuda")
    opts = PredictOptions(bands=selection, band_roles=roles, preview=preview, **kw)
    task = predict_task(model, task)
    _check_predict_flags(model, task, output, opts, panoptic, stuff_labels, points_per_side)
    vopts = None if vector is None else _vectorize_options(scene, vector, opts, task)
    # printed once every output is kept (a later step may fail)
    try:
        said = _predict_outputs(scene, model, output, opts, task, panoptic, stuff_labels,
                                points_per_side, progress_bar("predict", progress))  # fmt: skip
    except KeyboardInterrupt:
        click.get_current_context().meta["geoseg.interrupted"] = _interrupted_note(output, task)
        raise
    if vector is not None and vopts is not None:
        from geoseg.pipelines.vectorize import vectorize_labels

        bar = progress_bar("vectorize", progress)
        done = vectorize_labels(output, vector, vopts, bar)
        if done.area_method.planar:
            said.insert(0, area_note(done.area_method))
        said.append(f"wrote {done.output} ({done.polygons} polygons)")
    for line in said:
        click.echo(line)


def _interrupted_note(output: Path, task: str) -> str:
    """What a rerun of an interrupted predict does: resume from the kept chunks (a per-pixel
    model's, once predicting began), else start again."""
    from geoseg.io.parts import parts_folder

    if task != "semantic":
        return f"--task {task} does not resume: rerun it to start again"
    kept = parts_folder(output)
    if kept.is_dir():
        return f"finished chunks are kept in {kept}: rerun with --resume to continue"
    return "nothing was kept to resume: rerun it to start again"


def _check_predict_flags(model: str, task: str, output: Path, opts: PredictOptions,
                         panoptic: Path | None, stuff_labels: str | None,
                         points_per_side: int | None) -> None:  # fmt: skip
    """Refuse predict options that do not fit the task, before any file is written."""
    from geoseg.errors import GeosegError
    from geoseg.pipelines.model_input import refuse_tta
    from geoseg.pipelines.predict import check_distinct_outputs

    objects = task != "semantic"
    refuse_tta(model, task, opts.tta)
    if panoptic is not None and not objects:
        raise click.BadParameter("--panoptic needs an instance model (--task instance/panoptic)")
    if opts.probabilities is not None and objects:
        raise GeosegError(
            f"{model}: --probabilities needs a per-pixel class model; --task {task} gives "
            "object ids, not class probabilities (leave --probabilities out)"
        )
    check_distinct_outputs(output, opts.probabilities, opts.preview)
    if opts.mask_clouds is not None and objects:
        raise click.BadParameter("--mask-clouds applies to semantic maps, not --task " + task)
    if stuff_labels is not None and not (task == "panoptic" or panoptic is not None):
        raise click.BadParameter("--stuff-labels needs a panoptic output (--task panoptic)")
    if points_per_side is not None and task != "instance":
        raise click.BadParameter("--points-per-side applies to SAM's --task instance")


def _vectorize_options(
    scene: str, vector: Path, opts: PredictOptions, task: str
) -> VectorizeOptions:
    """``predict --vector``'s options, its output checked before the prediction runs."""
    from geoseg.pipelines.vectorize import VectorizeOptions, check_vectorize_output

    vopts = VectorizeOptions(
        overwrite=opts.overwrite, workers=opts.workers,
        connectivity=8 if task != "semantic" else 4,
        scheduler="threads" if opts.scheduler == "cuda" else opts.scheduler,
    )  # fmt: skip
    check_vectorize_output(vector, vopts, [Path(scene)])
    return vopts


def _predict_outputs(scene: str, model: str, output: Path, opts: PredictOptions, task: str,
                     panoptic: Path | None, stuff_labels: str | None,
                     points_per_side: int | None, bar: Progress | None) -> list[str]:  # fmt: skip
    """Run the prediction of ``task``; the lines that name what it wrote."""
    from geoseg.pipelines.predict import predict_scene

    said: list[str] = []
    if task != "semantic":
        from geoseg.pipelines.instances import predict_instances, predict_panoptic
    if task == "panoptic" and panoptic is None:  # -o is the panoptic raster
        found = predict_panoptic(scene, model, output, opts, bar, stuff_labels)
        said.append(f"wrote {found.output} ({found.count} instances)")
    elif task != "semantic":
        found = predict_instances(scene, model, output, opts, panoptic, bar, stuff_labels,
                                  points_per_side=points_per_side)  # fmt: skip
        said.append(f"wrote {found.output} ({found.count} instances)")
        if found.panoptic:
            said.append(f"wrote {found.panoptic}")
    else:
        result = predict_scene(scene, model, output, opts, bar)
        said += [f"{scene}: {fit}" for fit in (result.normalized or "").splitlines()]
        said.append(f"wrote {result.output} ({result.valid_pixels} labelled pixels)")
        if result.probabilities:
            said.append(f"wrote {result.probabilities}")
        if result.preview:
            said.append(f"wrote {result.preview}")
    return said


@cli.command()
@click.argument("labels", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Polygons: .gpkg, .shp, .parquet (GeoParquet), .fgb or .geojson.")  # fmt: skip
@click.option("--format", "fmt", help="gpkg, shp, parquet, fgb or geojson (default: by extension).")
@click.option("--simplify", "simplify_m", type=FiniteRange(min=0),
              help="Tolerance in ground metres; shared edges stay shared.")  # fmt: skip
@click.option("--min-area-ha", type=FiniteRange(min=0),
              help="Merge smaller polygons (ha) into the neighbour with most border.")  # fmt: skip
@click.option("--classes", help="Only these classes, by name or id, e.g. forest,water.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", show_default=True,
              help="8 also joins pixels that touch diagonally.")  # fmt: skip
@click.option("--layer", help="Layer name (default: the input's file name).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--assume-crs", help="CRS for a raster without one, e.g. EPSG:32633.")
@dask_options(2048, "Dask chunk side in px (the polygonization unit).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def vectorize(labels: str, output: Path, fmt: str | None, classes: str | None,
              connectivity: str, progress: bool | None, **kw: Any) -> None:  # fmt: skip
    """Turn a label raster into polygons with class names and true areas."""
    from geoseg.pipelines.vectorize import (
        VectorizeOptions,
        check_vectorize_output,
        vectorize_labels,
    )

    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    opts = VectorizeOptions(format=fmt, classes=wanted, connectivity=int(connectivity), **kw)
    check_vectorize_output(output, opts, [Path(labels)], format_option="--format")
    result = vectorize_labels(labels, output, opts, progress_bar("vectorize", progress))
    echo_area_note(result.area_method)
    click.echo(f"wrote {result.output} ({result.polygons} polygons, {result.area_ha:.2f} ha)")
