"""The content check of probability files: the argmax must reproduce the label map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.change.probability_content import (
    MAX_DISAGREEMENT,
    SAMPLE_SIDE,
    agreement,
    disagreeing,
    sample_windows,
)
from tests.change.helpers import (
    SCHEMA,
    labels_of,
    random_probabilities,
    write_labels,
    write_probabilities,
)

IDS = list(SCHEMA.ids)  # 1, 4, 9


@pytest.mark.parametrize(
    "label, stored, expected",
    [
        (4, (10, 200, 44), False),  # the labelled class is the top one
        (1, (127, 127, 0), False),  # a tie after rounding: either class may be the label
        (4, (128, 127, 0), False),  # rounding lifted the runner-up one byte over the label
        (4, (129, 127, 0), True),  # two bytes: not rounding
        (9, (200, 50, 4), True),  # another class altogether
        (255, (255, 255, 255), False),  # nodata in both
        (255, (200, 50, 4), True),  # probabilities where the map has no class
        (1, (255, 255, 255), True),  # a class where the file has no probabilities
        (7, (200, 50, 4), True),  # a value outside the schema is no class
    ],
)
def test_disagreeing_pixel(label: int, stored: tuple[int, int, int], expected: bool) -> None:
    labels = np.array([[label]], np.uint8)
    q = np.array(stored, np.uint8)[:, None, None]
    assert bool(disagreeing(labels, q, IDS)[0, 0]) is expected


def test_sample_is_bounded_and_independent_of_chunks() -> None:
    wins = sample_windows(50_000, 70_000)
    assert len(wins) == 100 and all(w.width == w.height == SAMPLE_SIDE for w in wins)
    assert sum(w.width * w.height for w in wins) == 102_400
    assert (wins[0].col_off, wins[0].row_off) == (0, 0)
    assert (wins[-1].col_off, wins[-1].row_off) == (70_000 - 32, 50_000 - 32)
    assert sample_windows(50_000, 70_000) == wins  # deterministic
    (whole,) = sample_windows(300, 300)  # small rasters are read whole
    assert (whole.width, whole.height) == (300, 300)
    thin = sample_windows(200_000, 10)
    assert len(thin) == 10 and all(w.width == 10 for w in thin)


def test_own_file_agrees_another_date_does_not(tmp_path: Path) -> None:
    p = random_probabilities((400, 500), 0)  # 200,000 px: sampled, not read whole
    path = write_labels(tmp_path / "lc.tif", labels_of(p))
    own = write_probabilities(path, p)
    found = agreement(path, own, SCHEMA)
    assert (found.disagreeing, found.compared) == (0, 102_400)
    other = random_probabilities((400, 500), 0)
    changed = np.random.default_rng(1).random((400, 500)) < 0.02
    other[:, changed] = random_probabilities((400, 500), 2)[:, changed]
    wrong = write_probabilities(path, other, tmp_path / "other.tif", tag=False)
    share = agreement(path, wrong, SCHEMA).share
    assert MAX_DISAGREEMENT < share < 0.02  # 2 % changed, 2/3 of them to another class
    assert share == pytest.approx(0.02 * 2 / 3, abs=0.002)
