"""SIGTERM (``kill``, ``timeout``, a batch scheduler) stops a run as Ctrl-C does.

Before, a run killed with SIGTERM left empty hidden temporaries, its lock and its
journal in the output folder (the next run cleaned them up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TINY_BANDS, textured_scene, write_raster

REPO = Path(__file__).resolve().parents[1]
#: ``geoseg predict`` whose chunks never finish (argv: the geoseg arguments).
STALLED = """
import time
import geoseg.pipelines.predict as predict
def stall(*args, **kwargs):
    while True:
        time.sleep(0.1)
predict.store_blocks = stall
from geoseg.cli import main
main()
"""


def test_sigterm_rolls_the_run_back(tmp_path: Path) -> None:
    scene = write_raster(tmp_path / "s.tif", textured_scene(40, 40), descriptions=TINY_BANDS)
    out = tmp_path / "out" / "o.tif"
    out.parent.mkdir()
    (out.parent / "keep.txt").write_text("not ours")
    run = subprocess.Popen(
        [sys.executable, "-c", STALLED, "predict", str(scene), "-m", "spectral", "-o", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = out.parent / ".o.tif.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the run never took its lock"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("geoseg: terminated (")
    assert sorted(p.name for p in out.parent.iterdir()) == ["keep.txt"]
