"""``geoseg import``: bring a model from elsewhere in as a geoseg checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.app import cli
from geoseg.errors import GeosegError
from geoseg.types import bands_count, parse_band_list


def _numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.27,0.25"`` -> ``(0.27, 0.25)``; a bad item is a one-line geoseg error."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in parse_band_list(text) or ())
    except ValueError:
        raise GeosegError(f"{option} {text!r}: expected numbers separated by commas") from None


@cli.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (.safetensors).")  # fmt: skip
@click.option("--bands", required=True,
              help="Scene band of each input channel, in order (RGB models: red, green, blue "
              "first, e.g. B04,B03,B02,B08).")  # fmt: skip
@click.option("--classes", type=click.Path(dir_okay=False, path_type=str),
              help="classes.yaml: one {id, name, colour} per model output, in order "
              "[transformers: the model's id2label; ONNX: required].")  # fmt: skip
@click.option("--window", type=int, help="Window side in px [the preprocessor's size or a "
              "fixed-size ONNX graph's own, else 256].")  # fmt: skip
@click.option("--margin", type=int, help="Margin in px trimmed from each side [window / 8].")
@click.option("--mean", help="Per-band mean subtracted (model units) [the preprocessor's; 0].")
@click.option("--std", help="Per-band standard deviation divided by [the preprocessor's; 1].")
@click.option("--scale", type=float, help="Model input = stored value / SCALE, e.g. 10000 for "
              "reflectance x 10000 [1 / the preprocessor's rescale_factor; 1].")  # fmt: skip
@click.option("--task", default="semantic", show_default=True,
              help="Checkpoint task: semantic, or instance / panoptic for Mask2Former and "
              "MaskFormer (objects stitched with scene-unique ids).")  # fmt: skip
@click.option("--things",
              help="Classes that are objects (names or ids, comma-separated) for --task "
              "instance/panoptic [classes.yaml's is_thing].")  # fmt: skip
@click.option("--score-threshold", type=float, default=0.5, show_default=True,
              help="Smallest object score kept (--task instance/panoptic).")  # fmt: skip
@click.option("--gsd", "gsd_m", type=float, help="Ground sample distance it was trained at, m.")
@click.option("--outputs", type=click.Choice(["logits", "probabilities"]), default="logits",
              show_default=True, help="ONNX: what the graph gives (logits: softmax).")  # fmt: skip
@click.option("--output-name", help="ONNX: the graph output that is the class map (required "
              "when the graph has several outputs).")  # fmt: skip
@click.option("--sam-config", help="A SAM .pth's model: vit_b, vit_l, vit_h or a SamConfig "
              "JSON file; a SAM 2 .pt's: hiera_t, hiera_s, hiera_b+, hiera_l or a "
              "Sam2VideoConfig JSON file [told from the tensor shapes].")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def import_(source: Path, output: Path, bands: str, classes: str | None, mean: str | None,
            std: str | None, things: str | None, **kw: object) -> None:  # fmt: skip
    """Write SOURCE as a self-describing geoseg checkpoint.

    SOURCE is an ONNX graph (model.onnx; it travels inside the checkpoint with its
    SHA-256 and runs through onnxruntime) or a Hugging Face transformers model folder
    (config.json + model.safetensors, as save_pretrained writes them), or SAM's own
    .pth checkpoint or SAM 2 / 2.1's .pt (read with torch.load(weights_only=True)
    only). Nothing is downloaded. `geoseg predict -m OUTPUT` then runs it with geoseg's tiling.
    """
    from geoseg.pipelines.importing import ImportOptions, import_model
    from geoseg.training.config import load_class_schema

    opts = ImportOptions(
        bands=parse_band_list(bands) or (),
        schema=load_class_schema(classes) if classes else None,
        mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"),
        things=None if things is None else parse_band_list(things) or (),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    result = import_model(source, output, opts)
    meta = result.meta
    kind = f"transformers {meta.arch[3:]}" if result.kind == "transformers" else result.kind
    kind = meta.arch if result.kind == "sam" else kind  # sam or sam2
    click.echo(
        f"wrote {result.output} ({kind}{'' if meta.task == 'semantic' else ' ' + meta.task}: "
        f"{bands_count(len(meta.bands))}, "
        f"{len(meta.schema)} classes, window {meta.window} px, margin {meta.margin} px)"
    )
    adapted = meta.provenance.get("first_conv", {})
    if adapted and adapted.get("pretrained_channels") != adapted.get("bands"):
        click.echo(
            f"first convolution {adapted.get('layer')} adapted from "
            f"{adapted.get('pretrained_channels')} to {adapted.get('bands')} bands"
        )
