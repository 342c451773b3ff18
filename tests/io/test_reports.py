"""Tests for the atomic report writers (geoseg/io/reports.py)."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.errors import GeosegError, OutputExistsError
from geoseg.evaluation import metrics_from_confusion
from geoseg.io.reports import write_confusion_csv, write_confusion_png, write_json

NAMES = ("forest", "water", "urban")
CONFUSION = np.array([[6, 2, 0], [1, 5, 2], [0, 1, 3]], dtype=np.int64)


def test_csv_round_trip(tmp_path: Path) -> None:
    out = write_confusion_csv(tmp_path / "confusion.csv", CONFUSION, NAMES)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["reference\\predicted", *NAMES]
    assert [r[0] for r in rows[1:]] == list(NAMES)
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=np.int64), CONFUSION)


def test_csv_quotes_awkward_names(tmp_path: Path) -> None:
    names = ("crops, annual", 'the "urban" class')
    out = write_confusion_csv(tmp_path / "c.csv", np.array([[1, 2], [3, 4]]), names)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == list(names)
    assert rows[2] == [names[1], "3", "4"]


def test_json_round_trip(tmp_path: Path) -> None:
    doc = metrics_from_confusion(np.pad(CONFUSION, (0, 1)), (*NAMES, "bare")).to_json()
    doc["confusion"] = np.pad(CONFUSION, (0, 1))  # numpy values are written as lists
    out = write_json(tmp_path / "metrics.json", doc)
    back = json.loads(out.read_text(encoding="utf-8"))
    assert back["classes"][3]["iou"] is None
    assert back["kappa"] == pytest.approx(7 / 13, abs=1e-12)
    assert back["confusion"][0] == [6, 2, 0, 0]
    assert list(back) == list(doc)  # key order kept
    assert out.read_text(encoding="utf-8").startswith('{\n  "pixels": 20,')


def test_png_draws_the_matrix(tmp_path: Path) -> None:
    out = write_confusion_png(tmp_path / "cm.png", CONFUSION, NAMES, title="validation")
    with Image.open(out) as im:
        assert im.format == "PNG"
        width, height = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert width >= 3 * 60 and height >= 3 * 60
    # The darkest cell is the most confident row's diagonal: dark blue is present.
    assert (pixels[..., 2].astype(int) - pixels[..., 0] > 60).any()


def test_png_differs_for_different_matrices(tmp_path: Path) -> None:
    a = write_confusion_png(tmp_path / "a.png", CONFUSION, NAMES)
    b = write_confusion_png(tmp_path / "b.png", CONFUSION.T.copy(), NAMES)
    c = write_confusion_png(tmp_path / "c.png", CONFUSION, NAMES)
    with Image.open(a) as ia, Image.open(b) as ib, Image.open(c) as ic:
        arr_a, arr_b, arr_c = (np.asarray(i.convert("RGB")) for i in (ia, ib, ic))
    assert arr_a.shape == arr_b.shape
    assert not np.array_equal(arr_a, arr_b)
    np.testing.assert_array_equal(arr_a, arr_c)


def test_png_handles_empty_rows_and_big_counts(tmp_path: Path) -> None:
    cm = np.array([[0, 0], [123_456_789, 1]], dtype=np.int64)
    out = write_confusion_png(tmp_path / "cm.png", cm, ("a", "a much longer class name"))
    with Image.open(out) as im:
        assert im.size[0] > 2 * 60 and im.size[1] > 2 * 60


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("m.json", lambda p, **kw: write_json(p, {"a": 1}, **kw)),
        ("c.csv", lambda p, **kw: write_confusion_csv(p, CONFUSION, NAMES, **kw)),
        ("c.png", lambda p, **kw: write_confusion_png(p, CONFUSION, NAMES, **kw)),
    ],
)
def test_existing_output_refused_then_overwritten(
    tmp_path: Path, name: str, write: Callable[..., Path]
) -> None:
    path = tmp_path / name
    path.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--overwrite") as info:
        write(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"old"
    write(path, overwrite=True)
    assert path.read_bytes() != b"old"
    assert os.listdir(tmp_path) == [name]


def test_no_temporaries_left_after_failure(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    with pytest.raises(ValueError, match="JSON"):
        write_json(path, {"miou": float("nan")})
    assert os.listdir(tmp_path) == []
    path.write_text("{}")
    with pytest.raises(ValueError):
        write_json(path, {"miou": float("nan")}, overwrite=True)
    assert os.listdir(tmp_path) == ["m.json"]
    assert path.read_text() == "{}"  # the old output survives a failed overwrite


def test_bad_matrix_refused_before_any_file(tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match="K = 2"):
        write_confusion_csv(tmp_path / "c.csv", CONFUSION, NAMES[:2])
    with pytest.raises(GeosegError, match="integer"):
        write_confusion_png(tmp_path / "c.png", CONFUSION / 2, NAMES)
    assert os.listdir(tmp_path) == []


def test_missing_folder_is_explained(tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match="does not exist"):
        write_json(tmp_path / "nope" / "m.json", {})


def test_permissions_follow_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        out = write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
