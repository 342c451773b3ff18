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
from geoseg.types import parse_band_list

__all__ = ["main"]

log = logging.getLogger("geoseg")


class _Group(click.Group):
    """Maps geoseg errors to exit code 2 with a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            if ctx.meta.get("geoseg.debug"):
                raise
            click.echo("geoseg: interrupted (rerun with --resume to continue)", err=True)
            ctx.exit(130)
        except GeosegError as exc:
            if ctx.meta.get("geoseg.debug"):
                raise
            click.echo(f"geoseg: error: {exc}", err=True)
            ctx.exit(2)


def _parse_bands(text: str | None) -> tuple[list[str] | None, dict[str, int]]:
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
    import dask.config

    # Dask distributed logs every worker and connection at INFO: keep that for -v.
    dask.config.set({"logging.distributed": "info" if verbose else "warning"})


@cli.command()
@click.argument("scene", type=click.Path(dir_okay=False, path_type=str))
@click.option("-m", "--model", required=True, help="'spectral' or a .safetensors checkpoint.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--confidence", is_flag=True, help="Add a confidence band (254 = certain).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same job.")
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
@click.option("--batch-size", type=int, help="Windows per model call [default: GPU 32, CPU 4].")
@click.option("--chunk", type=int, default=1024, show_default=True, help="Dask chunk side in px.")
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, sync, local (LocalCluster) or tcp://host:port.")  # fmt: skip
@click.option("--workers", type=int, help="Threads or worker processes.")
@click.option("--gpus", type=int, help="Run on N GPUs (dask-cuda, one worker per GPU).")
@click.option("--torch-threads", type=int, help="Torch threads per model call (CPU).")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="Model arithmetic: auto = fp16 on a GPU, fp32 on the CPU.",
)
@click.option("--vector", type=click.Path(dir_okay=False, path_type=Path),
              help="Also vectorize the map: .gpkg, .shp, .parquet, .fgb or .geojson.")  # fmt: skip
@click.option("--task", type=click.Choice(["semantic", "instance", "panoptic"]),
              help="instance: object ids (COG band 1 class, band 2 id); panoptic: also stuff. "
              "Default: the checkpoint's own task.")  # fmt: skip
@click.option("--panoptic", type=click.Path(dir_okay=False, path_type=Path),
              help="With an instance model: also write a panoptic COG (class, id).")  # fmt: skip
@click.option("--stuff-labels", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Panoptic from two models: a label map of the same scene from a semantic "
              "model (`geoseg predict`) gives the stuff; objects come from -m.")  # fmt: skip
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def predict(scene: str, model: str, output: Path, progress: bool | None, bands: str | None,
            preview: Path | None, vector: Path | None, task: str | None,
            panoptic: Path | None, stuff_labels: str | None, **kw: Any) -> None:  # fmt: skip
    """Segment SCENE into a label COG (or an instance / panoptic COG)."""
    from geoseg.pipelines.instances import predict_instances, predict_panoptic, predict_task
    from geoseg.pipelines.predict import PredictOptions, predict_scene
    from geoseg.pipelines.vectorize import (
        VectorizeOptions,
        check_vectorize_output,
        vectorize_labels,
    )

    selection, roles = _parse_bands(bands)
    gpus = kw.pop("gpus")
    if gpus:
        kw.update(scheduler="cuda", workers=gpus, device="cuda")
    opts = PredictOptions(bands=selection, band_roles=roles, preview=preview, **kw)
    task = predict_task(model, task)
    objects = task != "semantic"
    if panoptic is not None and not objects:
        raise click.BadParameter("--panoptic needs an instance model (--task instance/panoptic)")
    if stuff_labels is not None and not (task == "panoptic" or panoptic is not None):
        raise click.BadParameter("--stuff-labels needs a panoptic output (--task panoptic)")
    vopts = VectorizeOptions(
        overwrite=opts.overwrite, workers=opts.workers, connectivity=8 if objects else 4,
        scheduler="threads" if opts.scheduler == "cuda" else opts.scheduler,
    )  # fmt: skip
    if vector is not None:
        check_vectorize_output(vector, vopts, [Path(scene)])
    show = sys.stderr.isatty() if progress is None else progress
    bar = _TextProgress("predict") if show else None
    if task == "panoptic" and panoptic is None:  # -o is the panoptic raster
        found = predict_panoptic(scene, model, output, opts, bar, stuff_labels)
        click.echo(f"wrote {found.output} ({found.count} instances)")
    elif objects:
        found = predict_instances(scene, model, output, opts, panoptic, bar, stuff_labels)
        click.echo(f"wrote {found.output} ({found.count} instances)")
        if found.panoptic:
            click.echo(f"wrote {found.panoptic}")
    else:
        result = predict_scene(scene, model, output, opts, bar)
        click.echo(f"wrote {result.output} ({result.valid_pixels} labelled pixels)")
        if result.preview:
            click.echo(f"wrote {result.preview}")
    if vector is not None:
        bar = _TextProgress("vectorize") if show else None
        done = vectorize_labels(output, vector, vopts, bar)
        click.echo(f"wrote {done.output} ({done.polygons} polygons)")


@cli.command()
@click.argument("labels", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Polygons: .gpkg, .shp, .parquet (GeoParquet), .fgb or .geojson.")  # fmt: skip
@click.option("--format", "fmt", help="gpkg, shp, parquet, fgb or geojson (default: by extension).")
@click.option("--simplify", "simplify_m", type=float,
              help="Tolerance in ground metres; shared edges stay shared.")  # fmt: skip
@click.option("--min-area-ha", type=float,
              help="Merge smaller polygons (ha) into the neighbour with most border.")  # fmt: skip
@click.option("--classes", help="Only these classes, by name or id, e.g. forest,water.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", show_default=True,
              help="8 also joins pixels that touch diagonally.")  # fmt: skip
@click.option("--layer", help="Layer name (default: the input's file name).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--assume-crs", help="CRS for a raster without one, e.g. EPSG:32633.")
@click.option("--chunk", type=int, default=2048, show_default=True,
              help="Dask chunk side in px (the polygonization unit).")  # fmt: skip
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, sync, local (LocalCluster) or tcp://host:port.")  # fmt: skip
@click.option("--workers", type=int, help="Threads or worker processes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def vectorize(labels: str, output: Path, fmt: str | None, classes: str | None,
              connectivity: str, progress: bool | None, **kw: Any) -> None:  # fmt: skip
    """Turn a label raster into polygons with class names and true areas."""
    from geoseg.pipelines.vectorize import VectorizeOptions, vectorize_labels

    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    opts = VectorizeOptions(format=fmt, classes=wanted, connectivity=int(connectivity), **kw)
    show = sys.stderr.isatty() if progress is None else progress
    result = vectorize_labels(labels, output, opts, _TextProgress("vectorize") if show else None)
    click.echo(f"wrote {result.output} ({result.polygons} polygons, {result.area_ha:.2f} ha)")


def _parse_map(text: str | None) -> dict[int, int] | None:
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


def _explicit(ctx: click.Context, names: Sequence[str]) -> dict[str, Any]:
    """Options the user typed (so a --config file's values are not overridden by defaults)."""
    source = click.core.ParameterSource
    return {
        n: ctx.params[n]
        for n in names
        if ctx.get_parameter_source(n) not in (source.DEFAULT, source.DEFAULT_MAP, None)
    }


_TRAIN_OPTIONS = (
    "task", "arch", "encoder", "epochs", "steps_per_epoch", "batch_size", "window", "margin", "lr",
    "seed", "device", "resume", "overwrite", "class_field",
)  # fmt: skip


@cli.command()
@click.option("--image", "images", multiple=True, help="Training image (repeat for more).")
@click.option("--labels", "labels", multiple=True, help="Label raster for each --image.")
@click.option("--val-image", "val_images", multiple=True, help="Held-out image (repeatable).")
@click.option("--val-labels", "val_labels", multiple=True, help="Labels for each --val-image.")
@click.option("--chips", type=click.Path(file_okay=False), help="Folder of images/ + labels/.")
@click.option("--val-chips", type=click.Path(file_okay=False), help="Chip folder for validation.")
@click.option("--classes", help="classes.yaml: list of {id, name, colour}.")
@click.option("-o", "--output", help="Checkpoint to write (.safetensors).")
@click.option(
    "--config", type=click.Path(dir_okay=False), help="YAML file with any of these options."
)
@click.option("--task", type=click.Choice(["semantic", "change", "instance", "panoptic"]),
              default="semantic", show_default=True, help="change: images stacked by "
              "`geoseg stack`; instance, panoptic: --labels are instance id rasters or polygon "
              "layers (GPKG, GeoJSON).")  # fmt: skip
@click.option("--class-field", help="instance, panoptic: polygon attribute with each feature's "
              "class id or name (default: the schema's one is_thing class).")  # fmt: skip
@click.option("--arch", default="unet", show_default=True, help="smp architecture; with --task "
              "panoptic the body of a Panoptic-DeepLab; --task instance --arch maskrcnn: "
              "Mask R-CNN.")  # fmt: skip
@click.option(
    "--encoder",
    default="resnet18",
    show_default=True,
    help="Encoder; for maskrcnn its ResNet backbone (resnet18 ... resnet101).",
)
@click.option("--bands", help="Band numbers or names to train on (default: all).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--steps-per-epoch", type=int, default=50, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--window", type=int, default=64, show_default=True)
@click.option("--margin", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run writing --output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output.")
@click.pass_context
def train(ctx: click.Context, images: tuple[str, ...], labels: tuple[str, ...],
          val_images: tuple[str, ...], val_labels: tuple[str, ...], classes: str | None,
          output: str | None, config: str | None, bands: str | None, chips: str | None,
          val_chips: str | None, **_: Any) -> None:  # fmt: skip
    """Train a segmentation model on labelled rasters (or polygons, for instance/panoptic)."""
    from geoseg.training import load_train_config, train_model

    given = {"images": images or None, "labels": labels or None, "val_images": val_images or None,
             "val_labels": val_labels or None, "classes": classes, "output": output,
             "bands": bands.split(",") if bands else None, "chips": chips,
             "val_chips": val_chips}  # fmt: skip
    cfg = load_train_config(config, **given, **_explicit(ctx, _TRAIN_OPTIONS))

    score = {"instance": "AP50", "panoptic": "PQ"}.get(cfg.task, "mIoU")

    def report(r: Any) -> None:
        val = "" if r.val_miou is None else f"  val {score} {r.val_miou:.3f}"
        click.echo(f"epoch {r.epoch}/{r.epochs}  loss {r.loss:.4f}{val}", err=True)

    result = train_model(cfg, report)
    best = "" if result.best_miou is None else f" (best val {score} {result.best_miou:.3f})"
    click.echo(f"wrote {result.output}{best}")


@cli.command()
@click.option("-m", "--model", help="'spectral' or a .safetensors checkpoint.")
@click.option("--image", type=click.Path(dir_okay=False, path_type=str))
@click.option("--labels", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Reference; for instance/panoptic an id raster or polygon layer.")  # fmt: skip
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for metrics.json, confusion.csv, confusion.png.")  # fmt: skip
@click.option("--prediction", type=click.Path(dir_okay=False, path_type=str),
              help="Instance/panoptic: score this COG (instead of -m and --image).")  # fmt: skip
@click.option("--class-field", help="Polygon reference: field with each feature's class.")
@click.option("--classes", help="Score in these classes (classes.yaml) instead of the model's.")
@click.option("--map-reference", help="Reference value -> class id, e.g. 2=1,3=1,8=3.")
@click.option("--map-prediction", help="Model class id -> class id, e.g. 2=1,3=1.")
@click.option("--task", type=click.Choice(["semantic", "change", "instance", "panoptic"]),
              help="change: --labels is a 0/255 (or 0/1) change mask; scores the change "
              "class (F1, IoU, precision, recall). instance/panoptic: AP50, PQ, SQ, RQ. "
              "Default: the checkpoint's task.")  # fmt: skip
@click.option("--bands", help="Band numbers/names or spectral roles, as for predict.")
@click.option("--sensor", help="Band layout for spectral.")
@click.option("--device", default="auto", show_default=True)
@click.option("--window", type=int)
@click.option("--margin", type=int)
@click.option("--batch-size", type=int, help="Windows per model call [default: GPU 32, CPU 4].")
@click.option("--chunk", type=int, default=1024, show_default=True)
@click.option("--scheduler", default="threads", show_default=True)
@click.option("--workers", type=int)
@click.option("--overwrite", is_flag=True)
def evaluate(model: str | None, image: str | None, labels: str, output: Path,
             classes: str | None, map_reference: str | None, map_prediction: str | None,
             task: str | None, bands: str | None, prediction: str | None,
             class_field: str | None, **kw: Any) -> None:  # fmt: skip
    """Score MODEL on a labelled raster (mIoU, F1, kappa, confusion matrix).

    A change model (trained with --task change) is scored on the stacked dates
    against a change mask: F1, IoU, precision and recall of the change class.
    An instance model (or a --prediction COG) is scored against an id raster or
    a polygon layer: AP50 and PQ = SQ x RQ per class.
    """
    from geoseg.pipelines.evaluate import evaluate_scene
    from geoseg.pipelines.evaluate_instances import INSTANCE_TASKS, evaluate_task
    from geoseg.pipelines.predict import PredictOptions
    from geoseg.training.config import load_class_schema

    if prediction is not None and (model is not None or image is not None):
        raise click.UsageError("give -m MODEL and --image IMAGE, or --prediction, not both")
    task = evaluate_task(model, task)
    selection, roles = _parse_bands(bands)
    opts = PredictOptions(bands=selection, band_roles=roles, **kw)
    if task in INSTANCE_TASKS:
        _evaluate_instances(model, image, labels, output, prediction, class_field, task, opts)
        return
    if model is None or image is None:
        raise click.UsageError("give -m MODEL and --image IMAGE (--prediction: instance tasks)")
    schema = load_class_schema(classes) if classes else None
    result = evaluate_scene(
        model,
        image,
        labels,
        output,
        opts,
        schema,
        _parse_map(map_reference),
        _parse_map(map_prediction),
        task=task,
    )
    m = result.metrics
    if result.task == "change":
        c = m.names.index("change")
        click.echo(f"change F1 {m.f1[c]:.4f}  IoU {m.iou[c]:.4f}  precision {m.precision[c]:.4f}  "
                   f"recall {m.recall[c]:.4f}")  # fmt: skip
    click.echo(f"mIoU {m.miou:.4f}  overall accuracy {m.overall_accuracy:.4f}  kappa {m.kappa:.4f}")
    for name, iou, support in zip(m.names, m.iou, m.support, strict=True):
        click.echo(f"  {name:<20} IoU {iou:.4f}  ({support} reference px)")
    for path in result.files:
        click.echo(f"wrote {path}")


def _evaluate_instances(
    model: str | None, image: str | None, labels: str, output: Path, prediction: str | None,
    class_field: str | None, task: str, opts: Any,
) -> None:  # fmt: skip
    """``evaluate --task instance|panoptic``: AP50 and PQ per class."""
    from geoseg.pipelines.evaluate_instances import evaluate_instance_model, score_instances

    if prediction is not None:
        result = score_instances(
            prediction, labels, output, task, class_field, opts.overwrite, opts.chunk
        )
    elif model is not None and image is not None:
        result = evaluate_instance_model(model, image, labels, output, opts, task, class_field)
    else:
        raise click.UsageError("give -m MODEL and --image IMAGE, or --prediction")
    q = result.quality
    click.echo(f"AP50 {result.mean_ap50:.4f}  PQ {q.pq:.4f}  SQ {q.sq:.4f}  RQ {q.rq:.4f}")
    names = {c.id: c.name for c in result.schema.classes}
    for c, cq in sorted(q.per_class.items()):
        click.echo(f"  {names.get(c, str(c)):<20} PQ {cq.pq:.4f}  SQ {cq.sq:.4f}  RQ {cq.rq:.4f}  "
                   f"(TP {cq.tp}, FP {cq.fp}, FN {cq.fn})")  # fmt: skip
    for path in result.files:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("maps", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the tables, change.tif, PNGs and index.html.")  # fmt: skip
@click.option("--consistency", type=int, default=1, show_default=True,
              help="With 3+ maps: a change must persist over the last N dates.")  # fmt: skip
@click.option("--mmu-ha", type=float, help="Drop change patches under this area (ha).")
@click.option("--aoi", type=click.Path(dir_okay=False, path_type=str),
              help="Polygon layer: one transition table per feature.")  # fmt: skip
@click.option("--aoi-field", help="AOI attribute naming each feature (default: its number).")
@click.option("--samples-se", type=float,
              help="Write samples.gpkg for this SE of overall accuracy, e.g. 0.01.")  # fmt: skip
@click.option("--reference", type=click.Path(dir_okay=False, path_type=str),
              help="Labelled samples.gpkg: error-adjusted areas with 95% CIs.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--chunk", type=int, default=1024, show_default=True, help="Dask chunk side in px.")
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, sync, local (LocalCluster) or tcp://host:port.")  # fmt: skip
@click.option("--workers", type=int, help="Threads or worker processes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def change(maps: Sequence[str], output: Path, progress: bool | None, **kw: Any) -> None:
    """Compare label MAPS (first date first): transition areas, change raster, report."""
    from geoseg.pipelines.change import ChangeOptions, change_report

    if len(maps) < 2:
        raise click.BadParameter("give at least two label maps (before and after)")
    show = sys.stderr.isatty() if progress is None else progress
    result = change_report(
        maps, output, ChangeOptions(**kw), _TextProgress("change") if show else None
    )
    m = result.matrix
    changed = float(m.area_m2.sum() - m.area_m2.trace()) / 1e4
    click.echo(f"changed area {changed:,.2f} ha of {float(m.area_m2.sum()) / 1e4:,.2f} ha mapped")
    for path in result.files:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("dates", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def stack(dates: Sequence[str], output: Path, overwrite: bool) -> None:
    """Stack the bands of DATES (first date first) into one raster for change models."""
    from geoseg.io.stack import stack_dates

    click.echo(f"wrote {stack_dates(dates, output, overwrite)}")


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=str))
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder the workflow paths are relative to (and may not leave).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
def run(workflow: str, root: str, overwrite: bool, progress: bool | None) -> None:
    """Run a workflow file: predict every date, compare the maps, report."""
    from geoseg.pipelines.workflow import load_workflow, run_workflow

    wf = load_workflow(workflow, root)
    show = sys.stderr.isatty() if progress is None else progress
    result = run_workflow(wf, overwrite, _TextProgress(wf.name) if show else None)
    for path in (*result.maps, *result.report):
        click.echo(f"wrote {path}")
    if result.summary:
        s = result.summary
        click.echo(f"{s['focus']}: {s['area_ha']:,.2f} ha ({s['area_acres']:,.2f} acres)")
        for zone in s.get("by_aoi", []):
            click.echo(
                f"  {zone['aoi']}: {zone['area_ha']:,.2f} ha ({zone['area_acres']:,.2f} acres)"
            )


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
