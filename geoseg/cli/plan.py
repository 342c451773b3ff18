"""``geoseg plan``: a training plan (commented YAML config) from the data and the device."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.app import cli
from geoseg.models.registry import architectures, training_tasks


@cli.command()
@click.option("--image", "--images", "images", multiple=True, required=True,
              help="Training image (repeat for more).")  # fmt: skip
@click.option("--labels", "labels", multiple=True, required=True, help="Labels for each --image.")
@click.option("--classes", help="classes.yaml (default: one class per label value found).")
@click.option("--task", type=click.Choice(training_tasks()), default="semantic",
              show_default=True)  # fmt: skip
@click.option("--arch", type=click.Choice(architectures(), case_sensitive=False), default="unet",
              show_default=True)  # fmt: skip
@click.option("--encoder", default="resnet18", show_default=True)
@click.option("--bands", help="Band numbers or names to train on (default: all).")
@click.option("--class-field", help="instance, panoptic: polygon attribute with the class.")
@click.option("--labels-crs", help="Polygon labels' CRS when their file declares none.")
@click.option("--time-budget", default="30m", show_default=True,
              help="Training wall-clock budget: 90s, 30m, 2h.")  # fmt: skip
@click.option("--device", default="auto", show_default=True)
@click.option("--model", "model", help="Checkpoint the plan trains (default: beside the plan, "
              "PLAN.safetensors).")  # fmt: skip
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Plan file to write (.yaml).")  # fmt: skip
@click.option("--overwrite", is_flag=True)
def plan(images: tuple[str, ...], labels: tuple[str, ...], classes: str | None, task: str,
         arch: str, encoder: str, bands: str | None, class_field: str | None,
         labels_crs: str | None, time_budget: str, device: str, model: str | None,
         output: Path, overwrite: bool) -> None:  # fmt: skip
    """Plan training from the data and this machine: window, batch, normalization, epochs.

    Writes a YAML training config whose every key has a comment saying why; train
    with `geoseg train --plan PLAN.yaml` (options given there win over the plan).
    """
    from geoseg.errors import GeosegError
    from geoseg.training.plan_file import PlanRequest, key_lines, parse_duration, write_plan

    if len(images) != len(labels):
        raise GeosegError("give one --labels for each --image (in the same order)")
    req = PlanRequest(
        images, labels, model or str(output.with_suffix(".safetensors")), classes, task,
        arch.lower(), encoder, tuple(bands.split(",")) if bands else None, class_field,
        labels_crs, parse_duration(time_budget), device,
    )  # fmt: skip
    text = write_plan(output, req, overwrite)
    for line in key_lines(text):
        click.echo(line)
    click.echo(f"wrote {output}")
