"""A class-probability raster (``predict --probabilities``) given where a label map belongs.

It is uint8 with the label map's class schema, so it passed a label map's header
checks: ``geoseg change map.tif probs.tif`` reported transitions between band 1's
probability values (read as class ids) with exit 0, and evaluate, calibrate and train
took band 1 as reference labels. Each refuses it, naming the label map it was written
beside.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.pipelines import PredictOptions, predict_scene
from tests.cli_cases import CliCase, run_cli_case
from tests.conftest import (
    TINY_BANDS,
    TINY_SCHEMA,
    make_tiny_checkpoint,
    textured_scene,
    write_raster,
)


def _maps(tmp: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp / "m.safetensors")
    (tmp / "classes.yaml").write_text(
        "".join(
            f"- {{id: {c.id}, name: {c.name}, colour: [0, 0, 0]}}\n" for c in TINY_SCHEMA.classes
        )
    )
    for name, seed in (("a", 0), ("b", 1)):
        scene = write_raster(tmp / f"{name}_s.tif", textured_scene(64, 64, seed=seed),
                             descriptions=TINY_BANDS)  # fmt: skip
        predict_scene(scene, str(ckpt), tmp / f"{name}.tif",
                      PredictOptions(probabilities=str(tmp / f"{name}_p.tif")))  # fmt: skip


def _cmd(command: str, *argv: str):
    def build(tmp: Path) -> list[str]:
        _maps(tmp)
        return [command, *(a if a.startswith("-") or a.isdigit() else str(tmp / a) for a in argv)]

    return build


def _says(name: str, labels: str) -> tuple[str, ...]:
    return (f"{name}: is a class-probability raster", f"beside the label map {labels}",
            "pass the label map instead")  # fmt: skip


def _labels_case(command: str, out: str, *options: str) -> CliCase:
    """``command`` given date 1's probability raster as ``--labels`` over date 2's scene:
    refused, nothing written at ``out``."""
    argv = (*options, "--image", "b_s.tif", "--labels", "a_p.tif", "-o", out)
    return CliCase(_cmd(command, *argv), 2, _says("a_p.tif", "a.tif"), absent=(out,))


CASES = {
    "change_second_date_probabilities": CliCase(
        _cmd("change", "a.tif", "b_p.tif", "-o", "rep"),
        2,
        _says("b_p.tif", "b.tif"),
        absent=("rep",),
    ),
    "change_first_date_probabilities": CliCase(
        _cmd("change", "a_p.tif", "b.tif", "-o", "rep"),
        2,
        _says("a_p.tif", "a.tif"),
        absent=("rep",),
    ),
    "vectorize_probabilities": CliCase(
        _cmd("vectorize", "a_p.tif", "-o", "v.gpkg"),
        2,
        _says("a_p.tif", "a.tif"),
        absent=("v.gpkg",),
    ),
    "evaluate_labels_probabilities": _labels_case("evaluate", "ev", "-m", "m.safetensors"),
    "calibrate_labels_probabilities": _labels_case(
        "calibrate", "cal.safetensors", "-m", "m.safetensors"
    ),
    "train_labels_probabilities": _labels_case(
        "train", "t.safetensors", "--classes", "classes.yaml", "--epochs", "1"
    ),
    "change_label_maps_still_run": CliCase(
        _cmd("change", "a.tif", "b.tif", "-o", "rep"), 0, ("rep",), never=("probability raster",)
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_probability_raster_as_labels(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_cli_case(CASES[name], tmp_path, caplog)
