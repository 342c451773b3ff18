"""``geoseg calibrate``: a model's softmax temperature, fitted on held-out labelled pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.app import cli, dask_options, parse_bands, window_options


@cli.command()
@click.option("-m", "--model", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="A semantic or change .safetensors checkpoint.")  # fmt: skip
@click.option("--image", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Scene the labels describe, held out from the model's training.")  # fmt: skip
@click.option(
    "--labels",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Label raster of the model's class ids (nodata and other values unused).",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New checkpoint to write (.safetensors; never replaces a file).")  # fmt: skip
@click.option("--bands", help="Band numbers/names, as for predict.")
@click.option("--assume-crs", help="CRS for a scene without one, e.g. EPSG:32633.")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="Model arithmetic, as for predict (fit with the precision you predict with).",
)
@click.option("--normalize-dates", type=click.Choice(["irmad"]),
              help="Change models: map the stacked dates 2..n onto date 1 first, as predict "
              "--normalize-dates (fit on the inputs the model will predict from).")  # fmt: skip
@window_options()
@dask_options()
def calibrate(model: str, image: str, labels: str, output: Path, bands: str | None,
              **kw: Any) -> None:  # fmt: skip
    """Fit MODEL's softmax temperature on labelled pixels (Guo et al. 2017) into a NEW file.

    predict then divides the logits by T: the label maps are unchanged, the
    probabilities (--probabilities, change --rule posterior) are calibrated.
    Use pixels held out from training, never the scenes a result is measured on.
    """
    from geoseg.pipelines.calibrate import calibrate_model
    from geoseg.pipelines.predict import PredictOptions

    selection, roles = parse_bands(bands)
    result = calibrate_model(
        model, image, labels, output, PredictOptions(bands=selection, band_roles=roles, **kw)
    )
    fit = result.fit
    prior = (
        ""
        if result.previous == 1.0
        else f" (the input's {result.previous:.3f} x {fit.temperature:.3f})"
    )
    click.echo(f"temperature {result.temperature:.3f}{prior} from {fit.pixels:,} labelled px")
    click.echo(f"ECE (15 bins) {fit.ece_before:.4f} before, {fit.ece_after:.4f} after")
    click.echo(f"NLL {fit.nll_before:.4f} before, {fit.nll_after:.4f} after (nats per px)")
    click.echo(f"wrote {result.output}")
