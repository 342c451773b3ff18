"""plausibility warnings, and predict.model_window naming where a bad value came from."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import GeosegError
from geoseg.models.spectral import SPECTRAL_SCHEMA
from geoseg.pipelines.plausibility import BandGuess, warn_if_dominated
from geoseg.pipelines.predict import model_window
from tests.conftest import write_raster


@pytest.mark.parametrize(
    ("window", "margin", "result"),
    [
        (None, None, (64, 8)),
        (96, None, (96, 8)),
        (None, 16, (64, 16)),
        (None, 17, "window 64 px (from the model), margin 17 px (--margin): margin must be"),
        (70, None, "window 70 px (--window), margin 8 px (from the model): the window must be "
                   "a multiple of 32 for this model; pass --window 64"),
    ],
)  # fmt: skip
def test_model_window_names_where_a_bad_value_came_from(
    window: int | None, margin: int | None, result: tuple[int, int] | str
) -> None:
    if isinstance(result, tuple):
        assert model_window("m.safetensors", (64, 8), 32, window, margin) == result
        return
    with pytest.raises(GeosegError) as err:
        model_window("m.safetensors", (64, 8), 32, window, margin)
    assert str(err.value).startswith("m.safetensors: " + result)


@pytest.mark.parametrize(("water_rows", "warns"), [(100, True), (96, True), (94, False)])
def test_one_class_over_95_percent_warns_when_the_order_was_guessed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, water_rows: int, warns: bool
) -> None:
    labels = np.full((1, 100, 120), 2, np.uint8)  # bare
    labels[:, :water_rows] = 0  # water
    labels[:, :, 100:] = 255  # nodata does not count
    out = write_raster(tmp_path / "map.tif", labels, nodata=255)
    guess = BandGuess("red, green, blue", "--bands red=3,green=2,blue=1", warned=False)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        warn_if_dominated(out, "scene.tif", SPECTRAL_SCHEMA, guess)
        warn_if_dominated(out, "scene.tif", SPECTRAL_SCHEMA, BandGuess("", "", warned=True))
    messages = [r.getMessage() for r in caplog.records]
    if warns:
        assert len(messages) == 1
        assert f"{water_rows:.1f} % of the valid pixels are water" in messages[0]
        assert "scene.tif" in messages[0] and messages[0].endswith("red=3,green=2,blue=1")
    else:
        assert messages == []
