"""``geoseg predict`` of a semantic map loads no vector or instance libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geoseg
from tests.conftest import textured_scene, write_raster

#: Loaded by the instance and vectorize pipelines only (about 45 MB of RSS together).
HEAVY = ("geopandas", "shapely", "pyogrio")

SCRIPT = """
import sys
from click.testing import CliRunner
from geoseg.cli import cli
result = CliRunner().invoke(cli, sys.argv[1:])
print(result.output)
print("loaded:", ",".join(m for m in {heavy!r} if m in sys.modules))
sys.exit(result.exit_code)
"""


def test_a_semantic_predict_imports_no_vector_library(tmp_path: Path) -> None:
    scene = write_raster(tmp_path / "scene.tif", textured_scene(64, 64))
    root = str(Path(geoseg.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    out = tmp_path / "labels.tif"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(heavy=HEAVY), "predict", str(scene), "-m",
         "spectral", "--sensor", "rgbnir", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {out} (4096 labelled pixels)" in done.stdout
    assert done.stdout.rstrip().endswith("loaded:")  # before: geopandas,shapely,pyogrio
