"""A run killed mid-way (``kill -9``) is finished by the next run on its outputs.

Before, an ``--overwrite`` run killed after replacing some outputs left a folder mixing
two runs (a new ``transitions.csv`` beside the old ``summary.json``) and hidden
``.replaced`` copies that no later run removed; a killed workflow with ``resume: true``
was refused on rerun ("map_1_... exists; pass --overwrite").
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.lock import journal_path, lock_path
from geoseg.io.outputs import output_run
from tests.conftest import TINY_BANDS, textured_scene, write_raster

REPO = Path(__file__).resolve().parents[2]

#: A run that replaces a.txt, then dies writing b.txt (argv[1]: the folder).
KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from geoseg.io.atomic import temporary_sibling
from geoseg.io.outputs import output_run, publish
folder = Path(sys.argv[1])
with output_run(overwrite=True) as run:
    run.add_folder(folder, ["a.txt", "b.txt"])
    (folder / ".a.tmp").write_text("new a")
    publish(folder / ".a.tmp", folder / "a.txt")
    with temporary_sibling(folder / "b.txt") as tmp:  # b.txt half written
        tmp.write_text("new b, half")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_run_is_rolled_back_by_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.txt").write_text("old a")
    (folder / "b.txt").write_text("old b")
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(folder)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)  # fmt: skip
    assert done.returncode == -9
    assert (folder / "a.txt").read_text() == "new a"  # the mix the dead run left
    assert any(n.endswith(".replaced") for n in _hidden(folder))
    assert any(n.startswith(".b.") and n.endswith(".tmp.txt") for n in _hidden(folder))
    with caplog.at_level(logging.WARNING), output_run(overwrite=True) as run:
        run.add_folder(folder, ["a.txt", "b.txt"])
        assert (folder / "a.txt").read_text() == "old a"
        assert not journal_path(folder).exists()
    assert "0 new output(s), removed, and 1 replaced one(s), put back" in caplog.text
    assert (folder / "b.txt").read_text() == "old b"
    assert _hidden(folder) == [] and not lock_path(folder).exists()


def test_a_committed_journal_only_drops_the_earlier_versions(tmp_path: Path) -> None:
    out, aside = tmp_path / "m.tif", tmp_path / ".m.tif.1234.replaced"
    out.write_text("new")
    aside.write_text("old")
    new_only = tmp_path / "n.tif"
    new_only.write_text("new n")
    lines = [{"out": str(out), "aside": str(aside)}, {"out": str(new_only), "aside": None},
             {"commit": True}]  # fmt: skip
    journal_path(tmp_path).write_text("\n".join(json.dumps(e) for e in lines) + '\n{"out": "/x')
    with output_run() as run:
        run.lock(tmp_path)
    assert out.read_text() == "new" and new_only.read_text() == "new n" and not aside.exists()
    assert not journal_path(tmp_path).exists()
    # not committed (the last line cut by the crash is ignored): rolled back
    journal_path(tmp_path).write_text(json.dumps(lines[1]) + "\n" + '{"out": "/x')
    with output_run() as run:
        run.lock(tmp_path)
    assert not new_only.exists() and out.read_text() == "new"


WORKFLOW = (
    "scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\n"
    "focus: {from: [water], to: [vegetation]}\npredict: {chunk: 32, resume: true}\n"
)
#: ``geoseg run`` that dies (SIGKILL) when the change step starts: both maps are done.
KILLED_WORKFLOW = """
import os, signal
import geoseg.pipelines.workflow as workflow
workflow.change_report = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from geoseg.cli import main
main()
"""


def _maps(folder: Path) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob("map_*.tif")):
        with rasterio.open(path) as src:
            out.append(src.read())
    return out


def test_a_killed_workflow_reruns_and_resumes(tmp_path: Path) -> None:
    for name, seed in (("a.tif", 0), ("b.tif", 1)):
        write_raster(tmp_path / name, textured_scene(64, 48, seed=seed), descriptions=TINY_BANDS)
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    args = ["run", str(tmp_path / "wf.yaml"), "--root", str(tmp_path)]
    done = subprocess.run([sys.executable, "-c", KILLED_WORKFLOW, *args], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)  # fmt: skip
    assert done.returncode == -9
    assert len(list((tmp_path / "out").glob("map_*.tif"))) == 2
    assert list((tmp_path / "out").glob(".map_*.parts"))  # kept until the run succeeds
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert not list((tmp_path / "out").glob(".map_*.parts"))
    assert not list((tmp_path / "out").glob(".*.replaced"))
    resumed = _maps(tmp_path / "out")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("a.tif", "b.tif", "wf.yaml"):
        (fresh / name).write_bytes((tmp_path / name).read_bytes())
    plain = CliRunner().invoke(cli, ["run", str(fresh / "wf.yaml"), "--root", str(fresh)])
    assert plain.exit_code == 0, plain.output
    for a, b in zip(resumed, _maps(fresh / "out"), strict=True):
        np.testing.assert_array_equal(a, b)
    with (
        rasterio.open(tmp_path / "out/report/change.tif") as a,
        rasterio.open(fresh / "out/report/change.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())


def test_a_date_tag_that_cannot_be_read_is_kept_in_the_summary(tmp_path: Path) -> None:
    for name, seed, date in (("a.tif", 0, "01/08/2019"), ("b.tif", 1, "2020-08-01")):
        path = write_raster(tmp_path / name, textured_scene(40, 40, seed=seed),
                            descriptions=TINY_BANDS)  # fmt: skip
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(DATE=date)
    (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("chunk: 32, resume: true", "chunk: 32"))
    done = CliRunner().invoke(cli, ["run", str(tmp_path / "wf.yaml"), "--root", str(tmp_path)])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    said = [w for w in summary["warnings"] if w["rule"] == "scenes"]
    assert len(said) == 1 and "01/08/2019" in said[0]["message"], summary["warnings"]
