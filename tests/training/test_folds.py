"""``geoseg train --folds K``: the fold split, the per-fold scores and their JSON, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner
from rasterio.windows import Window
from scipy import ndimage

from geoseg.cli import cli
from geoseg.errors import ConfigError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from geoseg.io.stack import stack_dates
from geoseg.models.ensemble import member_meta
from geoseg.models.registry import checkpoint_family
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training.crossval import scores_path
from geoseg.training.folds import Block, Fold, fold_blocks
from tests.training.helpers import write_change_mask

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
CHANGE = [{"id": 0, "name": "no change", "colour": [9, 9, 9]},
          {"id": 1, "name": "change", "colour": [200, 0, 0]}]  # fmt: skip


def test_a_tall_raster_is_cut_into_row_strips_with_a_buffer_hand_checked() -> None:
    # 10 rows / 3 folds: edges round(0, 3.33, 6.67, 10) = 0, 3, 7, 10; buffer 1 row
    folds = fold_blocks([(10, 7)], 3, window=3, buffer=1, names=["a.tif"])
    assert folds == [
        Fold((Block(0, (0, 3), (0, 7)),), (Block(0, (4, 10), (0, 7)),)),
        Fold((Block(0, (3, 7), (0, 7)),), (Block(0, (0, 2), (0, 7)), Block(0, (8, 10), (0, 7)))),
        Fold((Block(0, (7, 10), (0, 7)),), (Block(0, (0, 6), (0, 7)),)),
    ]


def test_a_wide_raster_is_cut_into_column_strips_hand_checked() -> None:
    folds = fold_blocks([(4, 9), (9, 9)], 3, window=3, buffer=0, names=["a", "b"])
    assert [f.held for f in folds] == [
        (Block(0, (0, 4), (0, 3)), Block(1, (0, 3), (0, 9))),  # b is square: rows
        (Block(0, (0, 4), (3, 6)), Block(1, (3, 6), (0, 9))),
        (Block(0, (0, 4), (6, 9)), Block(1, (6, 9), (0, 9))),
    ]
    assert folds[1].train == (
        Block(0, (0, 4), (0, 3)), Block(0, (0, 4), (6, 9)),
        Block(1, (0, 3), (0, 9)), Block(1, (6, 9), (0, 9)),
    )  # fmt: skip


def test_whole_rasters_go_largest_first_to_the_smallest_fold_hand_checked() -> None:
    # areas 100, 25, 64, 9: 100 -> fold 0; 64 -> 1; 25 -> 1 (64 < 100); 9 -> 1 (89 < 100)
    folds = fold_blocks([(10, 10), (5, 5), (8, 8), (3, 3)], 2, window=64, buffer=8,
                        names=list("abcd"))  # fmt: skip
    whole = [Block(0, (0, 10), (0, 10)), Block(1, (0, 5), (0, 5)),
             Block(2, (0, 8), (0, 8)), Block(3, (0, 3), (0, 3))]  # fmt: skip
    assert folds == [
        Fold((whole[0],), (whole[1], whole[2], whole[3])),
        Fold((whole[1], whole[2], whole[3]), (whole[0],)),
    ]


@pytest.mark.parametrize(
    ("shapes", "k", "window", "buffer"),
    [([(101, 100)], 3, 32, 8), ([(37, 211), (64, 64)], 4, 16, 4), ([(50, 50)], 2, 25, 6)],
)
def test_held_out_blocks_cover_every_pixel_once_and_training_keeps_the_buffer(
    shapes: list[tuple[int, int]], k: int, window: int, buffer: int
) -> None:
    folds = fold_blocks(shapes, k, window, buffer, names=[f"r{i}" for i in range(len(shapes))])
    held_count = [np.zeros(s, int) for s in shapes]
    for fold in folds:
        held = [np.zeros(s, bool) for s in shapes]
        train = [np.zeros(s, bool) for s in shapes]
        for masks, blocks in ((held, fold.held), (train, fold.train)):
            for b in blocks:
                assert not masks[b.raster][slice(*b.rows), slice(*b.cols)].any(), "blocks overlap"
                masks[b.raster][slice(*b.rows), slice(*b.cols)] = True
        for h, t, count in zip(held, train, held_count, strict=True):
            count += h
            # training: every pixel more than `buffer` px (Chebyshev) from the held-out ones
            near = ndimage.binary_dilation(h, np.ones((3, 3), bool), iterations=buffer)
            assert (t == ~near).all()
            ys, xs = np.nonzero(h)
            assert min(np.ptp(ys), np.ptp(xs)) + 1 >= window
    for count in held_count:
        assert (count == 1).all()


def test_fewer_than_two_folds_or_too_many_for_the_window_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 2 folds"):
        fold_blocks([(100, 100)], 1, 32, 8, ["a.tif"])
    with pytest.raises(ConfigError, match=r"a\.tif is 100 px .* use --folds 3 or fewer"):
        fold_blocks([(100, 60)], 4, 32, 8, ["a.tif"])
    with pytest.raises(ConfigError, match="use a smaller --window or more rasters"):
        fold_blocks([(40, 40)], 2, 32, 8, ["a.tif"])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_data(tmp_path_factory.mktemp("sample"), height=96, width=128, seed=5)


def _train(sample: dict[str, Path], folder: Path, *extra: str) -> Any:
    classes, config = folder / "classes.yaml", folder / "net.yaml"
    classes.write_text(yaml.safe_dump(TRUTH_SCHEMA.to_json()))
    config.write_text(yaml.safe_dump({"options": SMALL_NET, "encoder": "tu-resnet18"}))
    args = [
        "train", "--image", sample["before"], "--labels", sample["truth_before"],
        "--classes", classes, "--config", config, "-o", folder / "cv.safetensors",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--window", "32",
        "--margin", "4", "--device", "cpu", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(cli, [str(a) for a in args])


def _cut(src_path: Path, block: dict[str, Any], out: Path) -> Path:
    """The block of a raster as a GeoTIFF of its own (same profile, its own transform)."""
    (r0, r1), (c0, c1) = block["rows"], block["cols"]
    with rasterio.open(src_path) as src:
        win = Window(c0, r0, c1 - c0, r1 - r0)  # type: ignore[call-arg]
        profile = {**src.profile, "height": r1 - r0, "width": c1 - c0,
                   "transform": src.window_transform(win)}  # fmt: skip
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.descriptions = src.descriptions
    return out


def test_folds_print_and_store_scores_that_evaluate_recomputes(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    result = _train(sample, tmp_path, "--folds", "2")
    assert result.exit_code == 0, result.output
    out = tmp_path / "cv.safetensors"
    doc = json.loads(scores_path(out).read_text())
    scores = [f["score"] for f in doc["folds"]]
    assert doc["metric"] == "mIoU" and len(scores) == 2 and None not in scores
    assert doc["mean"] == pytest.approx(np.mean(scores), abs=1e-12)
    assert doc["sd"] == pytest.approx(np.std(scores, ddof=1), abs=1e-12)
    # 96 x 128 px: cut across its 128 columns at 64
    assert [f["held"][0]["cols"] for f in doc["folds"]] == [[0, 64], [64, 128]]
    for f in doc["folds"]:
        assert f"fold {f['fold']}: held-out mIoU {f['score']:.4f}" in result.output
    assert f"cross-validation mIoU {doc['mean']:.4f} ± {doc['sd']:.4f} over 2 folds" in (
        result.output
    )
    meta = read_checkpoint_meta(out)
    assert checkpoint_family(meta).name == "ensemble" and meta.options["members"] == 2
    assert meta.metrics["cv_mIoU"] == doc["mean"] and meta.metrics["fold_mIoU"] == scores
    # fold 2 again: member 1 alone, its held-out block cut out, scored by `geoseg evaluate`
    tensors, _ = load_checkpoint(out)
    prefix = "members.1."
    one = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    member = save_checkpoint(tmp_path / "member2.safetensors", one, member_meta(meta)[0])
    block = doc["folds"][1]["held"][0]
    image = _cut(sample["before"], block, tmp_path / "held_image.tif")
    labels = _cut(sample["truth_before"], block, tmp_path / "held_labels.tif")
    scored = CliRunner().invoke(cli, ["evaluate", "-m", str(member), "--image", str(image),
                                      "--labels", str(labels), "-o", str(tmp_path / "ev"),
                                      "--device", "cpu"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(scores[1], abs=1e-9)


#: (extra arguments, what the one line says); {val} and {lab} are the sample's after-date files.
REFUSED = [
    (["--folds", "1"], "--folds 1: cross-validation needs at least 2 folds"),
    (["--folds", "0"], "--folds 0: cross-validation needs at least 2 folds"),
    (["--folds", "5"], "is 128 px along its longer side, too short for 5 strips of at least "
                       "--window 32 px; use --folds 4 or fewer"),
    (["--folds", "2", "--resume"], "--folds with --resume: a cross-validation run does not"),
    (["--folds", "2", "--task", "instance"], "which --task instance models do not give"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), REFUSED, ids=lambda v: str(v)[:30])
def test_bad_folds_are_refused_in_one_line(
    sample: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    extra = [a.format(val=sample["after"], lab=sample["truth_after"]) for a in extra]
    result = _train(sample, tmp_path, *extra)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "WARNING" not in line]
    assert len(errors) == 1 and message in errors[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.yaml", "net.yaml"]


def test_a_siamese_change_model_cross_validates_and_its_ensemble_evaluates(
    tmp_path: Path,
) -> None:
    sample = write_sample_data(tmp_path / "pair", height=64, width=96, seed=4)
    stacked = stack_dates([sample["before"], sample["after"]], tmp_path / "ab.tif")
    mask = write_change_mask(sample["truth_before"], sample["truth_after"], tmp_path / "c.tif")
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump(CHANGE))
    out = tmp_path / "cv.safetensors"
    args = [
        "train", "--task", "change", "--arch", "siam-diff", "--encoder", "resnet18",
        "--image", stacked, "--labels", mask, "--classes", tmp_path / "classes.yaml", "-o", out,
        "--folds", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
        "--window", "32", "--margin", "4", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    meta = read_checkpoint_meta(out)
    member = meta.options["member_arch"]
    assert (meta.task, meta.arch, member) == ("change", "ensemble", "siam-diff")
    doc = json.loads(scores_path(out).read_text())
    assert [f["held"][0]["cols"] for f in doc["folds"]] == [[0, 48], [48, 96]]
    scored = CliRunner().invoke(cli, ["evaluate", "-m", str(out), "--image", str(stacked),
                                      "--labels", str(mask), "-o", str(tmp_path / "ev"),
                                      "--device", "cpu"])  # fmt: skip
    assert scored.exit_code == 0 and "change F1" in scored.output, scored.output
