"""Findings of the twenty-first new-user trial: label rasters whose class tag numbers
the model's classes otherwise (scored by id: a confident wrong mIoU), a validation
image of other bands (a traceback after a whole epoch), duplicate class names, config
value errors that did not name the file, training options missing from provenance."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import InvalidRasterError
from geoseg.io.labels import CLASSES_TAG
from geoseg.pipelines.calibrate import calibrate_model
from geoseg.pipelines.evaluate import evaluate_scene
from geoseg.training.config import TrainConfig
from geoseg.training.data import load_rasters
from geoseg.types import ClassInfo, ClassSchema
from tests.conftest import TINY_BANDS, TINY_SCHEMA, textured_scene, write_raster

#: TINY_SCHEMA's classes (1=forest, 4=water, 9=urban) under other ids, names in other case.
RENUMBERED = ClassSchema(
    (ClassInfo(0, "Water", (0, 0, 200)), ClassInfo(1, "URBAN", (200, 0, 0)),
     ClassInfo(2, "forest", (0, 120, 0)))
)  # fmt: skip
#: TINY_SCHEMA id -> RENUMBERED id (same name).
TO_RENUMBERED = {1: 2, 4: 0, 9: 1}


def _tag(path: Path, schema: ClassSchema) -> Path:
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(schema.to_json())})
    return path


def _pair(tmp: Path) -> tuple[Path, Path, Path]:
    """A 64 x 64 scene; its labels in TINY_SCHEMA ids (untagged, some 255); the same
    labels written in RENUMBERED ids and tagged so."""
    scene = write_raster(tmp / "s.tif", textured_scene(64, 64), descriptions=TINY_BANDS)
    rng = np.random.default_rng(3)
    ids = rng.choice(np.array([1, 4, 9, 255], np.uint8), size=(64, 64), p=[0.4, 0.3, 0.2, 0.1])
    plain = write_raster(tmp / "plain.tif", ids[None], nodata=255)
    lut = np.full(256, 255, np.uint8)
    for a, b in TO_RENUMBERED.items():
        lut[a] = b
    renumbered = _tag(write_raster(tmp / "renum.tif", lut[ids][None], nodata=255), RENUMBERED)
    return scene, plain, renumbered


def test_evaluate_reads_tagged_labels_by_name(
    tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scene, plain, renumbered = _pair(tmp_path)
    by_id = evaluate_scene(str(tiny_checkpoint), scene, plain, tmp_path / "a")
    with caplog.at_level(logging.WARNING):
        by_name = evaluate_scene(str(tiny_checkpoint), scene, renumbered, tmp_path / "b")
    # the same pixels meaning the same classes: the same confusion, cell by cell
    np.testing.assert_array_equal(by_name.confusion, by_id.confusion)
    assert by_id.confusion.sum() == int((np.asarray(rasterio.open(plain).read(1)) != 255).sum())
    note = " ".join(r.getMessage() for r in caplog.records)
    assert f"{renumbered}: its classes are tiny's under other ids" in note
    assert "0->4 (water), 1->9 (urban), 2->1 (forest)" in note
    report = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert report["reference_map"] == {"0": 4, "1": 9, "2": 1}
    # an untagged raster is still scored by id, as before
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["reference_map"] is None


def test_evaluate_refuses_labels_naming_other_classes(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    scene, _, renumbered = _pair(tmp_path)
    other = ClassSchema((ClassInfo(0, "water", (0, 0, 200)), ClassInfo(1, "cloud", (9, 9, 9))))
    _tag(renumbered, other)
    argv = ["evaluate", "-m", str(tiny_checkpoint), "--image", str(scene), "--labels",
            str(renumbered), "-o", str(tmp_path / "ev")]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert f"{renumbered}: its classes (0=water, 1=cloud)" in line
    assert "(1=forest, 4=water, 9=urban)" in line and "'cloud' is not" in line
    assert f"gdal_edit.py -mo {CLASSES_TAG}=" in line and "--map-reference" in line
    # --map-reference says what the values mean: scored as the user says
    result = CliRunner().invoke(cli, [*argv, "--map-reference", "0=4,1=9"])
    assert result.exit_code == 0, result.output


def test_calibrate_reads_tagged_labels_by_name(tiny_checkpoint: Path, tmp_path: Path) -> None:
    scene, plain, renumbered = _pair(tmp_path)
    by_id = calibrate_model(str(tiny_checkpoint), scene, plain, tmp_path / "a.safetensors")
    by_name = calibrate_model(str(tiny_checkpoint), scene, renumbered, tmp_path / "b.safetensors")
    assert by_name.fit.pixels == by_id.fit.pixels
    assert by_name.temperature == pytest.approx(by_id.temperature, rel=1e-6)
    _tag(renumbered, ClassSchema((ClassInfo(0, "snow", (1, 1, 1)),)))
    with pytest.raises(InvalidRasterError, match="'snow' is not"):
        calibrate_model(str(tiny_checkpoint), scene, renumbered, tmp_path / "c.safetensors")


def test_training_reads_tagged_labels_by_name(tmp_path: Path) -> None:
    scene, plain, renumbered = _pair(tmp_path)
    cfg = TrainConfig(images=(str(scene),), labels=(str(renumbered),), classes=TINY_SCHEMA,
                      output=str(tmp_path / "m.safetensors"))  # fmt: skip
    got = load_rasters(cfg.images, cfg.labels, cfg)[0].labels
    want = rasterio.open(plain).read(1).astype(np.int64)
    np.testing.assert_array_equal(got, want)  # 255 stays 255, the rest in TINY_SCHEMA ids
    _tag(
        renumbered, ClassSchema((ClassInfo(0, "water", (1, 1, 1)), ClassInfo(1, "ice", (2, 2, 2))))
    )
    with pytest.raises(InvalidRasterError, match=r"renum.tif: its classes \(0=water, 1=ice\)"):
        load_rasters(cfg.images, cfg.labels, cfg)


def _train_cfg(tmp: Path, val_image: Path, val_labels: Path) -> TrainConfig:
    scene, plain, _ = _pair(tmp)
    return TrainConfig(images=(str(scene),), labels=(str(plain),), classes=TINY_SCHEMA,
                       output=str(tmp / "m.safetensors"), val_images=(str(val_image),),
                       val_labels=(str(val_labels),), epochs=1, steps_per_epoch=1,
                       batch_size=1, window=32, margin=4, device="cpu")  # fmt: skip


@pytest.mark.parametrize(
    ("bands", "names", "says"),
    [
        (3, ("B02", "B03", "B04"), "has 3 bands (B02, B03, B04), the training images 4"),
        (4, ("B02", "B03", "B04", "B11"), "has 4 bands (B02, B03, B04, B11)"),
    ],
)
def test_validation_image_of_other_bands_is_refused_before_training(
    tmp_path: Path, bands: int, names: tuple[str, ...], says: str
) -> None:
    from geoseg.errors import BandMismatchError
    from geoseg.training.tasks import semantic_setup

    val = write_raster(tmp_path / "v.tif", textured_scene(64, 64, bands), descriptions=names)
    cfg = _train_cfg(tmp_path, val, tmp_path / "plain.tif")
    with pytest.raises(BandMismatchError) as err:
        semantic_setup(cfg, __import__("torch").device("cpu"))
    assert str(err.value).startswith(f"{val}: --val-image {says}")
    assert "(B02, B03, B04, B08)" in str(err.value)


def test_validation_image_of_the_training_bands_is_taken(tmp_path: Path) -> None:
    import torch

    from geoseg.training.tasks import semantic_setup

    val = write_raster(tmp_path / "v.tif", textured_scene(64, 64, 4, seed=5),
                       descriptions=TINY_BANDS)  # fmt: skip
    cfg = _train_cfg(tmp_path, val, tmp_path / "plain.tif")
    _, _, meta, objective = semantic_setup(cfg, torch.device("cpu"))
    assert meta.bands == TINY_BANDS and objective.score is not None


@pytest.mark.parametrize("second", ["water", "Water"])
def test_classes_file_with_a_repeated_name_is_refused(tmp_path: Path, second: str) -> None:
    from geoseg.errors import ConfigError
    from geoseg.training.config import load_class_schema, load_train_config

    path = tmp_path / "dupname.yaml"
    path.write_text(
        "- {id: 0, name: water, colour: [200, 200, 200]}\n"
        "- {id: 3, name: land, colour: [0, 90, 0]}\n"
        f"- {{id: 1, name: {second}, colour: [0, 0, 255]}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_class_schema(path)
    assert str(err.value) == (
        f"{path}: class names must be unique, but ids 0 and 1 are both {second!r}; "
        "give each class its own name"
    )
    cfg = tmp_path / "cfg.yaml"  # an inline list in a --config file, the same
    cfg.write_text(f"classes:\n{path.read_text().replace('- ', '  - ')}")
    with pytest.raises(ConfigError, match=rf"{cfg}: class names must be unique, but ids 0 and 1"):
        load_train_config(cfg, images=("a.tif",), labels=("b.tif",), output="m.safetensors")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("ema: 1.5", "ema must be a finite number in [0, 0.9999], got 1.5"),
        ("epochs: two", "epochs must be a whole number >= 1, got 'two'"),
    ],
)
def test_config_value_errors_name_the_file_and_key(tmp_path: Path, line: str, says: str) -> None:
    from geoseg.errors import ConfigError
    from geoseg.training.config import load_train_config

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"{line}\nclasses: [{{id: 0, name: land, colour: [0, 90, 0]}}]\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(cfg, images=("a.tif",), labels=("b.tif",), output="m.safetensors")
    assert str(err.value) == f"{cfg}: {says} (set in this file: edit it there)"


def test_checkpoint_records_the_options_that_change_the_weights(tmp_path: Path) -> None:
    from geoseg.pipelines.describe import describe_checkpoint
    from geoseg.training import train_model

    scene, plain, _ = _pair(tmp_path)
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(images=(str(scene),), labels=(str(plain),), classes=TINY_SCHEMA,
                      output=str(out), epochs=1, steps_per_epoch=1, batch_size=2, window=32,
                      margin=4, device="cpu", ema=0.9, dice_weight=0.25,
                      class_weights={"water": 3}, normalization="percentile")  # fmt: skip
    train_model(cfg)
    from geoseg.io.checkpoint import read_checkpoint_meta

    prov = read_checkpoint_meta(out).provenance
    assert {k: prov[k] for k in ("ema", "dice_weight", "class_weights", "normalization")} == {
        "ema": 0.9, "dice_weight": 0.25, "class_weights": {"water": 3.0},
        "normalization": "percentile",
    }  # fmt: skip
    assert "date_augment" not in prov and "swap_dates" not in prov  # recorded only when on
    line = next(x for x in describe_checkpoint(out) if x.startswith("  training:"))
    assert "ema 0.9" in line and "class_weights {'water': 3.0}" in line
