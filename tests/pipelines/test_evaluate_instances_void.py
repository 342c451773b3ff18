"""evaluate --task instance|panoptic: what is void, which references are refused,
what is warned about, which options are refused (user trial on SpaceNet Atlanta)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

from geoseg.cli import cli
from geoseg.io.labels import CLASSES_TAG
from geoseg.pipelines.evaluate_instances import score_instances
from geoseg.types import ClassInfo, ClassSchema
from tests.conftest import write_raster

BUILDINGS = ClassSchema((ClassInfo(2, "building", (200, 0, 0), is_thing=True),))


def _prediction(tmp: Path, left_nodata: bool = True) -> Path:
    """40 x 40 instance COG: one building matching reference object 3, one false
    positive; the left half (x < 20) has no data (declared in the mask)."""
    cls = np.full((40, 40), 255, np.uint32)
    ids = np.zeros((40, 40), np.uint32)
    cls[24:30, 24:30], ids[24:30, 24:30] = 2, 1  # = reference object 3
    cls[32:36, 24:28], ids[32:36, 24:28] = 2, 2  # matches nothing
    path = write_raster(tmp / "pred.tif", np.stack([cls, ids]), descriptions=("class", "instance"))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(BUILDINGS.to_json())})
        mask = np.full((40, 40), 255, np.uint8)
        if left_nodata:
            mask[:, :20] = 0
        dst.write_mask(mask)
    return path


def _reference(tmp: Path, name: str = "ref.tif", **kw: object) -> Path:
    """Four reference buildings (ids 1-4): 1 and 2 wholly in the left half, 3 and 4 right."""
    ids = np.zeros((40, 40), np.uint32)
    ids[2:8, 2:8] = 1
    ids[24:30, 4:10] = 2
    ids[24:30, 24:30] = 3
    ids[4:10, 28:34] = 4
    return write_raster(tmp / name, ids[None], **kw)  # type: ignore[arg-type]


def test_reference_objects_on_prediction_nodata_are_void(tmp_path: Path) -> None:
    result = score_instances(_prediction(tmp_path), _reference(tmp_path), tmp_path / "ev")
    q = result.quality.per_class[2]
    # by hand: objects 1, 2 are void; 3 matched (IoU 1); 4 missed; pred 2 is a FP
    assert (q.tp, q.fp, q.fn) == (1, 1, 1)
    assert q.sq == 1.0 and q.rq == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert result.ap50[2] == pytest.approx(0.5 * 0.5)  # precision 1/2 x recall 1/2
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["reference_segments"] == 2


def test_without_nodata_every_reference_object_counts(tmp_path: Path) -> None:
    """The same maps with the prediction valid everywhere: objects 1, 2 are misses."""
    pred = _prediction(tmp_path, left_nodata=False)
    q = score_instances(pred, _reference(tmp_path), tmp_path / "ev").quality.per_class[2]
    assert (q.tp, q.fp, q.fn) == (1, 1, 3)


def _refused(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def _score_cli(tmp: Path, ref: Path, *more: str) -> list[str]:
    return ["evaluate", "--prediction", str(_prediction(tmp)), "--labels", str(ref),
            "-o", str(tmp / "ev"), *more]  # fmt: skip


def test_reference_on_the_same_grid_scores_as_before(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, _score_cli(tmp_path, _reference(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "(TP 1, FP 1, FN 1)" in result.output


def test_reference_off_the_image_is_refused(tmp_path: Path) -> None:
    far = Affine(10, 0, 550000, 0, -10, 5100000)  # 50 km east
    ref = _reference(tmp_path, "far.tif", transform=far)
    text = _refused(_score_cli(tmp_path, ref))
    assert f"{ref}: lies off the image" in text


def test_reference_in_another_crs_is_refused(tmp_path: Path) -> None:
    """The same area in EPSG:32632 (the neighbouring zone): ids are not resampled."""
    (x,), (y,) = warp_transform("EPSG:32633", "EPSG:32632", [500000], [5100000])
    origin = Affine(10, 0, x, 0, -10, y)
    ref = _reference(tmp_path, "utm32.tif", crs="EPSG:32632", transform=origin)
    text = _refused(_score_cli(tmp_path, ref))
    assert f"{ref}: is in EPSG:32632, the image in EPSG:32633" in text and "gdalwarp" in text


def test_reference_on_a_shifted_grid_is_refused(tmp_path: Path) -> None:
    """Shifted by half a pixel (5 m): overlapping the image, but not on its pixels."""
    ref = _reference(tmp_path, "shift.tif", transform=Affine(10, 0, 500005, 0, -10, 5100000))
    text = _refused(_score_cli(tmp_path, ref))
    assert f"{ref}: is on a shifted grid" in text
    assert "-te 500000.0 5099600.0 500400.0 5100000.0 -ts 40 40" in text


def test_reference_classes_outside_the_schema_are_counted_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A class band saying 7 (not a class of the prediction) on objects 3 and 4."""
    ids = np.zeros((40, 40), np.uint32)
    ids[24:30, 24:30], ids[4:10, 28:34], ids[12:16, 24:28] = 3, 4, 5
    cls = np.where(ids > 0, 7, 255).astype(np.uint32)
    cls[12:16, 24:28] = 2  # object 5 is a building, missed by the prediction
    bands = ("instance", "class")
    ref = write_raster(tmp_path / "c7.tif", np.stack([ids, cls]), descriptions=bands)
    with caplog.at_level("WARNING"):
        result = score_instances(_prediction(tmp_path), ref, tmp_path / "ev")
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["reference_segments"] == 1  # object 5 only
    assert report["unknown_reference_values"] == [{"value": 7, "pixels": 72, "objects": 2}]
    (warning,) = [w for w in report["warnings"] if "not scored" in w]
    assert f"{ref}: reference classes that are not classes of" in warning
    assert "7: 72 px, 2 objects" in warning and warning in caplog.text
    q = result.quality.per_class[2]
    assert (q.tp, q.fp, q.fn) == (0, 2, 1)  # both predictions unmatched, object 5 missed


@pytest.mark.parametrize(
    ("more", "says"),
    [
        (["--classes", "c.yaml"], "--classes applies to semantic and change scoring"),
        (["--map-reference", "1=2"], "--map-reference applies to semantic and change"),
        (["--map-prediction", "2=1"], "--map-prediction applies to semantic and change"),
        (["--window", "64"], "--window: sets how a model runs"),
        (["--bands", "1"], "--bands: sets how a model runs"),
        (["--window", "64", "--margin", "8"], "--window, --margin: set how a model runs"),
        (["-m", "x.safetensors"], "give -m MODEL and --image IMAGE, or --prediction, not both"),
    ],
)
def test_options_instance_scoring_would_ignore_are_refused(
    tmp_path: Path, more: list[str], says: str
) -> None:
    text = _refused(_score_cli(tmp_path, _reference(tmp_path), *more))
    assert says in text
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_a_semantic_model_for_an_instance_task_names_the_right_article(tmp_path: Path) -> None:
    from tests.conftest import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "sem.safetensors")
    ref = str(_reference(tmp_path))
    text = _refused(["evaluate", "-m", str(ckpt), "--task", "instance", "--image", str(ckpt),
                     "--labels", ref, "-o", str(tmp_path / "ev")])  # fmt: skip
    assert "pass an instance model checkpoint" in text


def test_ap50_without_reference_objects_is_null_with_a_note(tmp_path: Path) -> None:
    """An empty reference: AP50 is 0/0 (null, n/a), not 0; both predictions are FPs."""
    empty = write_raster(tmp_path / "empty.tif", np.zeros((1, 40, 40), np.uint32))
    result = CliRunner().invoke(cli, _score_cli(tmp_path, empty))
    assert result.exit_code == 0, result.output
    assert "AP50 n/a (no reference object)" in result.output
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["ap50"] is None and "no reference object" in report["note_ap50"]
    assert report["classes"][0]["fp"] == 2 and report["classes"][0]["ap50"] is None


def test_iou_of_exactly_one_half_is_no_match_as_metrics_json_says(tmp_path: Path) -> None:
    """Prediction 1 covers 6 x 6 px of which reference object 3 is 6 x 3: IoU 18/36 = 0.5."""
    ids = np.zeros((40, 40), np.uint32)
    ids[24:30, 24:27] = 3
    ref = write_raster(tmp_path / "half.tif", ids[None])
    result = score_instances(_prediction(tmp_path), ref, tmp_path / "ev")
    q = result.quality.per_class[2]
    assert (q.tp, q.fp, q.fn) == (0, 2, 1) and result.ap50 == {2: 0.0}
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "IoU > 0.5 (strict" in report["ap_definition"]
    assert "all-point interpolation" in report["ap_definition"]
    assert report["pq_match"].startswith("same class, mask IoU > 0.5")
