"""A worker dying mid-run does not change the result: the COG has the same bytes."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from geoseg.models.cache import ModelSpec, load_predictor
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.pipelines import predict as predict_module
from geoseg.types import Predictor
from tests.conftest import TINY_BANDS, textured_scene, write_raster

#: Folder where the chunk tasks of every process count their model loads (inherited
#: by the cluster's worker processes through the environment).
KILL_DIR = "GEOSEG_TEST_KILL_DIR"
#: The chunk task that kills its worker: a later one, so other chunks are done by then.
KILL_AT = 3


def killing_loader(spec: ModelSpec) -> Predictor:
    """:func:`load_predictor`, except that the ``KILL_AT``-th chunk task of the whole run
    (counted across processes by files) ends its worker process, once."""
    folder = Path(os.environ[KILL_DIR])
    (folder / f"call-{uuid.uuid4().hex}").touch()
    if len(list(folder.glob("call-*"))) >= KILL_AT:
        try:
            fd = os.open(folder / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return load_predictor(spec)
        os.close(fd)
        os._exit(1)  # a crash, not an exception: the worker process is gone
    return load_predictor(spec)


def _options(**kw: object) -> PredictOptions:
    return PredictOptions(chunk=144, device="cpu", confidence=True, **kw)  # type: ignore[arg-type]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_killing_a_worker_mid_run_gives_the_same_cog_bytes(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = textured_scene(300, 250, seed=4)
    data[:, :60, :50] = 0  # a nodata corner
    scene = write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS)
    clean, faulty = tmp_path / "clean.tif", tmp_path / "faulty.tif"
    # 3 x 2 chunks of 144 px, COG tiles of 144 px
    predict_scene(scene, str(tiny_checkpoint), clean, _options())
    (tmp_path / "kills").mkdir()
    monkeypatch.setenv(KILL_DIR, str(tmp_path / "kills"))
    monkeypatch.setattr(predict_module, "load_predictor", killing_loader)

    predict_scene(scene, str(tiny_checkpoint), faulty, _options(scheduler="local", workers=2))

    assert (tmp_path / "kills" / "killed").exists(), "no worker was killed"
    assert len(list((tmp_path / "kills").glob("call-*"))) > 6, "no chunk was run again"
    assert _sha(faulty) == _sha(clean)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clean.tif",
        "faulty.tif",
        "kills",
        "scene.tif",
    ], "no parts folder or temporary file is left"
