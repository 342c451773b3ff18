"""GDAL's block cache: bounded by geoseg.io unless the user sets it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_SHOW = (
    "import geoseg.io, rasterio\n"
    "from rasterio.env import get_gdal_config\n"
    "with rasterio.Env():\n"
    "    print(get_gdal_config('GDAL_CACHEMAX'))\n"
)


@pytest.mark.parametrize(
    ("user", "expected_mb"),
    [
        (None, 32),  # one chunk row of an 8 000 px wide scene is 60 MB: not kept
        ("200", 200),  # the user's value wins
    ],
)
def test_gdal_cache_max_in_a_fresh_process(user: str | None, expected_mb: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    if user is not None:
        env["GDAL_CACHEMAX"] = user
    out = subprocess.run(
        [sys.executable, "-c", _SHOW], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == expected_mb * 2**20  # rasterio reports it in bytes
