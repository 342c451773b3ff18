"""``geoseg train``, ``evaluate``, ``models`` and ``info``: checkpoints and their scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoseg.cli.app import (
    AT_LEAST_ONE,
    NOT_NEGATIVE,
    FiniteRange,
    cli,
    dask_options,
    explicit,
    outputs,
    parse_bands,
    parse_map,
    tta_option,
    window_options,
)
from geoseg.io.outputs import output_run
from geoseg.models.registry import TASKS, architectures, task_kind, training_tasks

if TYPE_CHECKING:
    from geoseg.pipelines.evaluate import EvaluateResult

_TRAIN_OPTIONS = (
    "task", "arch", "encoder", "epochs", "steps_per_epoch", "batch_size", "window", "margin", "lr",
    "seed", "device", "resume", "overwrite", "class_field", "labels_crs", "folds",
)  # fmt: skip
#: What ``geoseg evaluate`` may write into its folder (semantic/change, instance tasks).
_EVALUATE_FILES = (
    "metrics.json", "confusion.csv", "confusion.png", "instances.tif", "panoptic.tif",
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
@click.option("--config", "--plan", "config", type=click.Path(dir_okay=False),
              help="YAML file with any of these options (a `geoseg plan` file).")  # fmt: skip
@click.option("--auto", is_flag=True, help="Plan (as `geoseg plan`) and train: the plan is "
              "written beside -o as NAME.plan.yaml; options given here win.")  # fmt: skip
@click.option("--time-budget", help="With --auto: training wall-clock budget (90s, 30m, 2h; "
              "default 30m).")  # fmt: skip
@click.option("--task", type=click.Choice(training_tasks()),
              default="semantic", show_default=True, help="change: images stacked by "
              "`geoseg stack`; instance, panoptic: --labels are instance id rasters or polygon "
              "layers (GPKG, GeoJSON).")  # fmt: skip
@click.option("--class-field", help="instance, panoptic: polygon attribute with each feature's "
              "class id or name (default: the schema's one is_thing class).")  # fmt: skip
@click.option("--labels-crs", help="Polygon labels' CRS when their file declares none (or a "
              "wrong one), e.g. EPSG:32633; 'raster': the image's CRS.")  # fmt: skip
@click.option("--arch", type=click.Choice(architectures(), case_sensitive=False), default="unet",
              show_default=True, help="Architecture (`geoseg models` lists them by family); "
              "with --task panoptic the body of a Panoptic-DeepLab; --task instance --arch "
              "maskrcnn: Mask R-CNN; solov2: SOLOv2; condinst: CondInst; mask2former: "
              "Mask2Former for semantic, instance or panoptic (needs geoseg[hf]).")  # fmt: skip
@click.option(
    "--encoder",
    default="resnet18",
    show_default=True,
    help="Encoder; for maskrcnn its ResNet backbone (resnet18 ... resnet101); for "
    "mask2former resnet18 ... resnet101 or swin-tiny, swin-small, swin-base.",
)
@click.option("--bands", help="Band numbers or names to train on (default: all).")
@click.option(
    "--encoder-weights",
    type=click.Path(dir_okay=False),
    help="Start the encoder from this state dict (.pth read with torch.load "
    "weights_only=True, never unpickled; .safetensors; a geoseg checkpoint).",
)
@click.option("--encoder-bands", help="Bands the --encoder-weights were trained on, in order "
              "(e.g. B01,...,B12): the scene's bands are picked by name.")  # fmt: skip
@click.option("--epochs", type=AT_LEAST_ONE, default=30, show_default=True)
@click.option("--steps-per-epoch", type=AT_LEAST_ONE, default=50, show_default=True)
@click.option("--batch-size", type=AT_LEAST_ONE, default=16, show_default=True)
@click.option("--window", type=AT_LEAST_ONE, default=64, show_default=True)
@click.option("--margin", type=NOT_NEGATIVE, default=8, show_default=True)
@click.option("--lr", type=FiniteRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--seed", type=NOT_NEGATIVE, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run writing --output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output.")
@click.option("--folds", type=int, help="Cross-validate on K spatially separate blocks; write "
              "their ensemble and NAME.folds.json (semantic, change); --val-image pixels "
              "then fit the ensemble's temperature.")  # fmt: skip
@click.pass_context
def train(ctx: click.Context, images: tuple[str, ...], labels: tuple[str, ...],
          val_images: tuple[str, ...], val_labels: tuple[str, ...], classes: str | None,
          output: str | None, config: str | None, bands: str | None, chips: str | None,
          val_chips: str | None, encoder_weights: str | None, encoder_bands: str | None,
          auto: bool, time_budget: str | None, **kw: Any) -> None:  # fmt: skip
    """Train a segmentation model on labelled rasters (or polygons, for instance/panoptic)."""
    from geoseg.training import load_train_config, train_model
    from geoseg.training.state import interrupted_note

    given = {"images": images or None, "labels": labels or None, "val_images": val_images or None,
             "val_labels": val_labels or None, "classes": classes, "output": output,
             "bands": bands.split(",") if bands else None, "chips": chips,
             "val_chips": val_chips, "encoder_weights": encoder_weights,
             "encoder_bands": encoder_bands.split(",") if encoder_bands else None}  # fmt: skip
    if time_budget is not None and not auto:
        raise click.UsageError("--time-budget applies with --auto")
    with output_run(kw["overwrite"] or kw["resume"]):
        # --auto: the plan is part of the run's output (undone if training cannot start)
        config = _auto_plan(config, given, time_budget, kw) if auto else config
        cfg = load_train_config(config, **given, **explicit(ctx, _TRAIN_OPTIONS))
    score = task_kind(cfg.task).metric

    done: list[int] = []

    def report(r: Any) -> None:
        val = "" if r.val_miou is None else f"  val {score} {r.val_miou:.3f}"
        click.echo(f"epoch {r.epoch}/{r.epochs}  loss {r.loss:.4f}{val}", err=True)
        done.append(r.epoch)

    if cfg.folds is not None:
        _train_folds(cfg, report)
        return
    # the checkpoint is not rolled back: with its state file it is what --resume continues
    with output_run(cfg.overwrite or cfg.resume) as run:
        run.lock(Path(cfg.output))
        try:
            result = train_model(cfg, report)
        except KeyboardInterrupt:
            ctx.meta["geoseg.interrupted"] = interrupted_note(Path(cfg.output), max(done or [0]))
            raise
    best = "" if result.best_miou is None else f" (best val {score} {result.best_miou:.3f})"
    click.echo(f"wrote {result.output}{best}")
    _echo_calibration(result.calibration)


def _echo_calibration(fit: Any) -> None:
    """The temperature ``train`` fitted on the validation pixels, if it fitted one."""
    if fit is not None:
        click.echo(f"calibrated on the validation pixels: temperature {fit.temperature:.3f}, "
                   f"ECE {fit.ece_before:.4f} -> {fit.ece_after:.4f} "
                   f"({fit.pixels:,} px)")  # fmt: skip


def _train_folds(cfg: Any, report: Any) -> None:
    """``train --folds K``: the members' epochs, each fold's held-out score, the ensemble."""
    from geoseg.training.crossval import scores_path, train_folds

    with output_run(cfg.overwrite) as run:  # the checkpoint and its scores, or neither
        run.lock(Path(cfg.output))
        run.add([Path(cfg.output), scores_path(cfg.output)])
        result = train_folds(cfg, report, lambda line: click.echo(line, err=True))
    for f in result.folds:
        score = "n/a" if f.score is None else f"{f.score:.4f}"
        click.echo(f"fold {f.fold}: held-out {result.metric} {score}  ({f.held_px:,} px)")
    spread = "" if result.sd is None else f" ± {result.sd:.4f}"
    mean = "n/a" if result.mean is None else f"{result.mean:.4f}"
    click.echo(f"cross-validation {result.metric} {mean}{spread} over {len(result.folds)} folds")
    click.echo(f"wrote {result.output} (ensemble of {len(result.folds)} members)")
    click.echo(f"wrote {result.scores}")
    _echo_calibration(result.calibration)


def _auto_plan(config: str | None, given: dict[str, Any], budget: str | None,
               kw: dict[str, Any]) -> str:  # fmt: skip
    """``train --auto``: plan the run beside ``-o`` (printing its key lines); the plan's path."""
    from geoseg.errors import OutputExistsError
    from geoseg.training.plan_file import PlanRequest, key_lines, parse_duration, write_plan
    from geoseg.training.state import unfinished_run

    if config is not None or not given["output"] or not (given["images"] and given["labels"]):
        raise click.UsageError("--auto plans from --image/--labels and -o; leave out --config")
    out = Path(given["output"])
    plan = out.with_name(out.name.removesuffix(".safetensors") + ".plan.yaml")
    if kw["resume"] and plan.is_file():  # the schedule a resumed run continues
        return str(plan)
    unfinished = unfinished_run(out, plan) if plan.exists() and not kw["overwrite"] else None
    if unfinished:
        raise OutputExistsError(unfinished)
    req = PlanRequest(
        given["images"], given["labels"], str(out), given["classes"], kw["task"],
        kw["arch"].lower(), kw["encoder"], given["bands"], kw["class_field"], kw["labels_crs"],
        parse_duration(budget or "30m"), kw["device"],
        validated=bool(given["val_images"] or given["val_chips"]),
    )  # fmt: skip
    text = write_plan(plan, req, kw["overwrite"] or kw["resume"])
    click.echo("plan:\n" + "\n".join(key_lines(text)) + f"\nwrote {plan}", err=True)
    return str(plan)


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
@click.option("--labels-crs", help="Polygon reference's CRS when its file declares none (or a "
              "wrong one), e.g. EPSG:32633; 'raster': the prediction's CRS.")  # fmt: skip
@click.option("--classes", help="Score in these classes (classes.yaml) instead of the model's.")
@click.option("--map-reference", help="Reference value -> class id, e.g. 2=1,3=1,8=3.")
@click.option("--map-prediction", help="Model class id -> class id, e.g. 2=1,3=1.")
@click.option("--task", type=click.Choice(tuple(TASKS)),
              help="change: --labels is a 0/255 (or 0/1) change mask; scores the change "
              "class (F1, IoU, precision, recall). instance/panoptic: AP50, PQ, SQ, RQ. "
              "Default: the checkpoint's task.")  # fmt: skip
@click.option("--bands", help="Band numbers/names or spectral roles, as for predict.")
@click.option("--sensor", help="Band layout for spectral.")
@click.option("--assume-crs", help="CRS for a scene without one, e.g. EPSG:32633.")
@click.option(
    "--interior-points",
    type=NOT_NEGATIVE,
    default=0,
    show_default=True,
    help="SAM: positive points inside each reference polygon join its box prompt.",
)
@click.option("--device", default="auto", show_default=True)
@window_options()
@tta_option()
@dask_options()
@click.option("--overwrite", is_flag=True)
@outputs(folder="output", folder_files=_EVALUATE_FILES)
def evaluate(model: str | None, image: str | None, labels: str, output: Path,
             classes: str | None, map_reference: str | None, map_prediction: str | None,
             task: str | None, bands: str | None, prediction: str | None,
             class_field: str | None, labels_crs: str | None, interior_points: int,
             **kw: Any) -> None:  # fmt: skip
    """Score MODEL on a labelled raster (mIoU, F1, kappa, confusion matrix).

    A change model (trained with --task change) is scored on the stacked dates
    against a change mask: F1, IoU, precision and recall of the change class.
    An instance model (or a --prediction COG) is scored against an id raster or
    a polygon layer: AP50 and PQ = SQ x RQ per class. A SAM checkpoint is
    prompted with a box per reference polygon: mean IoU with those polygons.
    """
    from geoseg.pipelines.evaluate import evaluate_scene
    from geoseg.pipelines.evaluate_instances import INSTANCE_TASKS, evaluate_task
    from geoseg.pipelines.model_input import refuse_tta
    from geoseg.pipelines.predict import PredictOptions
    from geoseg.training.config import load_class_schema

    if prediction is not None and (model is not None or image is not None):
        raise click.UsageError("give -m MODEL and --image IMAGE, or --prediction, not both")
    task = evaluate_task(model, task)
    selection, roles = parse_bands(bands)
    opts = PredictOptions(bands=selection, band_roles=roles, **kw)
    refuse_tta(model, task, opts.tta)
    if task == "prompt":
        from geoseg.cli.prompt import evaluate_prompts

        evaluate_prompts(model, image, labels, output, opts, interior_points, labels_crs)
        return
    if interior_points:
        raise click.UsageError("--interior-points applies to a SAM checkpoint")
    if task in INSTANCE_TASKS:
        _refuse_unused(task, prediction, classes, map_reference, map_prediction, bands, kw)
        _evaluate_instances(
            model, image, labels, output, prediction, class_field, task, opts, labels_crs
        )
        return
    if labels_crs is not None:
        raise click.UsageError("--labels-crs applies to a polygon reference (instance tasks)")
    if model is None or image is None:
        raise click.UsageError("give -m MODEL and --image IMAGE (--prediction: instance tasks)")
    schema = load_class_schema(classes) if classes else None
    result = evaluate_scene(model, image, labels, output, opts, schema, parse_map(map_reference),
                            parse_map(map_prediction), task=task)  # fmt: skip
    _echo_scores(result)


def _echo_scores(result: EvaluateResult) -> None:
    """Print ``evaluate``'s semantic or change scores and the files it wrote."""
    from geoseg.evaluation.metrics import format_score

    m, notes = result.metrics, result.metrics.notes()
    if result.task == "change":
        c = m.names.index("change")
        why_p, why_r = f"no pixel predicted as {m.names[c]}", f"no reference pixel of {m.names[c]}"
        click.echo(f"change F1 {format_score(m.f1[c], notes[c])}  "
                   f"IoU {format_score(m.iou[c], notes[c])}  "
                   f"precision {format_score(m.precision[c], why_p)}  "
                   f"recall {format_score(m.recall[c], why_r)}")  # fmt: skip
    click.echo(f"mIoU {format_score(m.miou)}  overall accuracy {format_score(m.overall_accuracy)}"
               f"  kappa {format_score(m.kappa, 'one class in both maps')}")  # fmt: skip
    for name, iou, support, note in zip(m.names, m.iou, m.support, notes, strict=True):
        click.echo(f"  {name:<20} IoU {format_score(iou, note)}  ({support} reference px)")
    for path in result.files:
        click.echo(f"wrote {path}")


#: Options that only steer running a model: unused when a --prediction is scored.
_MODEL_RUN = ("window", "margin", "batch_size", "sensor", "assume_crs", "ignore_gsd", "workers")


def _refuse_unused(
    task: str, prediction: str | None, classes: str | None, map_reference: str | None,
    map_prediction: str | None, bands: str | None, kw: dict[str, Any],
) -> None:  # fmt: skip
    """Refuse options ``evaluate --task instance|panoptic`` would ignore, in one line."""
    for name, value in (("classes", classes), ("map-reference", map_reference),
                        ("map-prediction", map_prediction)):  # fmt: skip
        if value is not None:
            raise click.UsageError(
                f"--{name} applies to semantic and change scoring; --task {task} scores "
                "the model's classes (a polygon reference names them with --class-field)"
            )
    if prediction is None:
        return
    given = [n for n in _MODEL_RUN if kw.get(n) not in (None, False)]
    given += ["bands"] if bands is not None else []
    given += ["device"] if kw.get("device", "auto") != "auto" else []
    if given:
        names = ", ".join("--" + n.replace("_", "-") for n in given)
        raise click.UsageError(
            f"{names}: set{'s' if len(given) == 1 else ''} how a model runs; --prediction "
            f"{prediction} is scored as it is: leave {names} out"
        )


def _evaluate_instances(
    model: str | None, image: str | None, labels: str, output: Path, prediction: str | None,
    class_field: str | None, task: str, opts: Any, labels_crs: str | None,
) -> None:  # fmt: skip
    """``evaluate --task instance|panoptic``: AP50 and PQ per class."""
    from geoseg.pipelines.evaluate_instances import evaluate_instance_model, score_instances

    if prediction is not None:
        result = score_instances(
            prediction, labels, output, task, class_field, opts.overwrite, opts.chunk,
            labels_crs=labels_crs,
        )  # fmt: skip
    elif model is not None and image is not None:
        result = evaluate_instance_model(
            model, image, labels, output, opts, task, class_field, labels_crs
        )
    else:
        raise click.UsageError("give -m MODEL and --image IMAGE, or --prediction")
    q = result.quality
    ap50 = "n/a (no reference object)" if result.mean_ap50 is None else f"{result.mean_ap50:.4f}"
    click.echo(f"AP50 {ap50}  PQ {q.pq:.4f}  SQ {q.sq:.4f}  RQ {q.rq:.4f}")
    if result.task == "panoptic":
        click.echo(f"PQ_things {_score(q.pq_things, 'things')}  "
                   f"PQ_stuff {_score(q.pq_stuff, 'stuff')}")  # fmt: skip
    names = {c.id: c.name for c in result.schema.classes}
    for c, cq in sorted(q.per_class.items()):
        click.echo(f"  {names.get(c, str(c)):<20} PQ {cq.pq:.4f}  SQ {cq.sq:.4f}  RQ {cq.rq:.4f}  "
                   f"(TP {cq.tp}, FP {cq.fp}, FN {cq.fn})")  # fmt: skip
    for path in result.files:
        click.echo(f"wrote {path}")


def _score(value: float | None, kind: str) -> str:
    """A PQ mean as printed: ``n/a (why)`` where it is 0/0."""
    return f"n/a (no {kind} segment on either side)" if value is None else f"{value:.4f}"


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
    """Describe a raster (georeferencing, bands, classes), a vector file or a checkpoint."""
    from geoseg.pipelines.describe import describe_file

    for line in describe_file(path):
        click.echo(line)
