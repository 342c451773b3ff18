"""``geoseg predict --probabilities``: the class-probability COG beside the label map."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.io.labels import CLASSES_TAG, read_class_schema
from geoseg.io.parts import parts_folder
from geoseg.io.probabilities import (
    LABELS_TAG,
    PROB_NODATA,
    PROB_SCALE,
    PROBABILITIES_TAG,
    probabilities_of,
)
from geoseg.models.runtime import load_torch_predictor
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.types import TileSpec
from tests.conftest import (
    TINY_BANDS,
    TINY_SCHEMA,
    make_instance_checkpoint,
    textured_scene,
    write_raster,
)
from tests.reference import reference_labels

K = len(TINY_SCHEMA)


def _scene(tmp_path: Path, h: int = 150, w: int = 173) -> tuple[Path, np.ndarray]:
    data = textured_scene(h, w)
    data[:, : h // 4, : w // 5] = 0  # nodata corner
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=TINY_BANDS), data


def _read(path: Path, overview: int | None = None) -> np.ndarray:
    with rasterio.open(path, overview_level=overview) as src:
        return src.read()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def _check_consistent(labels: np.ndarray, probs: np.ndarray, ids: np.ndarray) -> None:
    """The bands are probabilities of the label map: nodata, sums and argmax agree."""
    valid = labels != 255
    assert (probs[:, ~valid] == PROB_NODATA).all()
    assert (probs[:, valid] != PROB_NODATA).all()
    stored = probs[:, valid].astype(int)
    assert (np.abs(stored.sum(axis=0) - PROB_SCALE) <= K / 2).all()
    top2 = np.sort(stored, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1  # ties after rounding to 1/254 may go either way
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(ids[stored.argmax(axis=0)][clear], labels[valid][clear])


@pytest.mark.parametrize("blend", ["trim", "hann"])
def test_bands_are_the_probabilities_whose_argmax_is_the_label(
    tmp_path: Path, tiny_checkpoint: Path, blend: str
) -> None:
    scene, data = _scene(tmp_path)
    out, probs, plain = tmp_path / "lc.tif", tmp_path / "lc_probs.tif", tmp_path / "plain.tif"
    opts = PredictOptions(chunk=96, device="cpu", blend=blend, confidence=True)
    result = predict_scene(
        scene, str(tiny_checkpoint), out, PredictOptions(**{**vars(opts), "probabilities": probs})
    )
    predict_scene(scene, str(tiny_checkpoint), plain, opts)

    assert result.probabilities == probs
    labels, conf = _read(out)
    p = _read(probs)
    assert p.shape == (K, *labels.shape) and p.dtype == np.uint8
    _check_consistent(labels, p, np.array(TINY_SCHEMA.ids))
    valid = labels != 255
    # the confidence band is the winner's probability, quantised the same way
    np.testing.assert_array_equal(conf[valid], p[:, valid].max(axis=0))
    np.testing.assert_array_equal(labels, _read(plain)[0])  # same labels as without
    model = load_torch_predictor(tiny_checkpoint, "cpu")
    spec = TileSpec(64, 8, blend=blend)
    np.testing.assert_array_equal(
        labels, reference_labels(data, ~(data == 0).all(0), spec, model, TINY_SCHEMA.ids)
    )
    assert len(np.unique(p[0][valid])) > 50  # a real spread, not one-hot


def test_file_format_tags_and_average_overviews(tmp_path: Path, tiny_checkpoint: Path) -> None:
    scene, _ = _scene(tmp_path, 600, 90)  # over 512 px: one overview
    out, probs = tmp_path / "lc.tif", tmp_path / "sub" / "p.tif"
    probs.parent.mkdir()
    opts = PredictOptions(chunk=512, margin=16, device="cpu", probabilities=probs)
    predict_scene(scene, str(tiny_checkpoint), out, opts)

    with rasterio.open(out) as lab, rasterio.open(probs) as src:
        assert src.descriptions == TINY_SCHEMA.names
        assert src.nodata == PROB_NODATA and src.dtypes == ("uint8",) * K
        assert (src.crs, src.transform, src.shape) == (lab.crs, lab.transform, lab.shape)
        assert src.tags()[LABELS_TAG] == "lc.tif"
        assert json.loads(src.tags()[CLASSES_TAG]) == json.loads(lab.tags()[CLASSES_TAG])
        assert lab.tags()[PROBABILITIES_TAG] == "sub/p.tif"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert lab.count == 1 and src.overviews(1) == [2]
    assert probabilities_of(out) == probs.resolve()
    full, half = _read(probs).astype(int), _read(probs, 0).astype(int)
    blocks = full.reshape(K, 300, 2, 45, 2).transpose(0, 1, 3, 2, 4).reshape(K, 300, 45, 4)
    ok = blocks != PROB_NODATA
    n = ok.sum(axis=-1)
    mean = (np.where(ok, blocks, 0).sum(axis=-1) + n // 2) // np.maximum(n, 1)
    np.testing.assert_array_equal(half, np.where(n > 0, mean, PROB_NODATA))
    assert (half[0] % 2 == 1).any()  # not what a 2 x 2 mode of even stored values gives


def test_identical_bytes_for_any_chunking(tmp_path: Path, tiny_checkpoint: Path) -> None:
    scene, _ = _scene(tmp_path, 600, 120)
    files = {}
    # window 64, margin 16: chunks of 512 (2 x 1) and 1024 (one) px share 512-px COG
    # tiles; 96 px: no COG tile divides it, GDAL's COG driver writes the files
    for chunk in (512, 1024, 96):
        folder = tmp_path / str(chunk)
        folder.mkdir()
        out, probs = folder / "lc.tif", folder / "lc_probs.tif"
        opts = PredictOptions(chunk=chunk, margin=16, device="cpu", probabilities=probs)
        predict_scene(scene, str(tiny_checkpoint), out, opts)
        files[chunk] = (out, probs)
    for a, b in zip(files[512], files[1024], strict=True):
        assert _sha(a) == _sha(b)
    for a, b in zip(files[512], files[96], strict=True):
        np.testing.assert_array_equal(_read(a), _read(b))
    _check_consistent(_read(files[512][0])[0], _read(files[512][1]), np.array(TINY_SCHEMA.ids))


def test_local_cluster_gives_the_same_bytes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    scene, _ = _scene(tmp_path, 300, 250)  # 3 x 2 chunks of 144 px
    hashes = []
    for scheduler in ("threads", "local"):  # local: chunks are encoded in worker processes
        folder = tmp_path / scheduler
        folder.mkdir()
        out, probs = folder / "lc.tif", folder / "lc_probs.tif"
        opts = PredictOptions(
            chunk=144, device="cpu", scheduler=scheduler, workers=2, probabilities=probs
        )
        predict_scene(scene, str(tiny_checkpoint), out, opts)
        hashes.append((_sha(out), _sha(probs)))
    assert hashes[0] == hashes[1]


def test_resume_keeps_probability_chunks_and_ends_identical(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    scene, _ = _scene(tmp_path, 300, 250)  # 3 x 2 chunks of 144 px
    clean, clean_p = tmp_path / "clean.tif", tmp_path / "clean_p.tif"
    base = {"chunk": 144, "device": "cpu", "scheduler": "sync"}
    full: list[int] = []
    opts = PredictOptions(**base, probabilities=clean_p)
    predict_scene(scene, str(tiny_checkpoint), clean, opts, lambda d, t: full.append(t))
    out, probs = tmp_path / "lc.tif", tmp_path / "lc_p.tif"

    def stop(done: int, total: int) -> None:  # once two of the six chunks are kept
        if len(list(parts_folder(probs).glob("*.npz"))) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_scene(
            scene, str(tiny_checkpoint), out, PredictOptions(**base, probabilities=probs), stop
        )
    kept = sorted(parts_folder(probs).glob("*.npz"))
    assert kept and not out.exists() and not probs.exists()
    seen: list[int] = []
    opts = PredictOptions(**base, probabilities=probs, resume=True)
    predict_scene(scene, str(tiny_checkpoint), out, opts, lambda d, t: seen.append(t))
    np.testing.assert_array_equal(_read(probs), _read(clean_p))
    np.testing.assert_array_equal(_read(out), _read(clean))
    assert seen and max(seen) < max(full), "kept chunks were computed again"
    assert not parts_folder(out).exists() and not parts_folder(probs).exists()


def test_spectral_model_gives_its_five_class_probabilities(tmp_path: Path) -> None:
    scene, _ = _scene(tmp_path, 60, 80)
    out, probs = tmp_path / "lc.tif", tmp_path / "p.tif"
    code, text = cli_run("predict", scene, "-m", "spectral", "-o", out, "--probabilities", probs)
    assert code == 0, text
    assert f"wrote {probs}" in text
    labels, p = _read(out)[0], _read(probs)
    with rasterio.open(out) as src:
        ids = np.array([c["id"] for c in json.loads(src.tags()[CLASSES_TAG])])
    assert p.shape[0] == len(ids) == 5
    valid = labels != 255
    assert (np.abs(p[:, valid].astype(int).sum(axis=0) - PROB_SCALE) <= 2).all()
    np.testing.assert_array_equal(ids[p[:, valid].argmax(axis=0)], labels[valid])


def test_onnx_model_and_masked_clouds(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from tests.models.onnx_graphs import cloud_graph, conv_graph, write_classes
    from tests.models.test_onnx import BANDS, _cloudy, import_graph

    imported = import_graph(tmp_path, conv_graph(tmp_path / "m.onnx"))
    classes = write_classes(tmp_path / "clouds.yaml", ["clear", "cloud", "cloud shadow"])
    clouds = tmp_path / "clouds.safetensors"
    code, text = cli_run("import", cloud_graph(tmp_path / "c.onnx"), "-o", clouds, "--bands",
                         BANDS, "--classes", classes, "--window", 64, "--scale", 10000)  # fmt: skip
    assert code == 0, text
    data, cloud = _cloudy(textured_scene(80, 100))
    scene = write_raster(tmp_path / "s.tif", data, descriptions=TINY_BANDS)
    for model, extra in ((imported, []), (tiny_checkpoint, ["--mask-clouds", clouds])):
        out, probs = tmp_path / f"{model.stem}.tif", tmp_path / f"{model.stem}_p.tif"
        code, text = cli_run("predict", scene, "-m", model, "-o", out, "--probabilities", probs,
                             "--chunk", 48, *extra)  # fmt: skip
        assert code == 0, text
        labels, p = _read(out)[0], _read(probs)
        schema = read_class_schema(out)
        assert schema is not None
        _check_consistent(labels, p, np.array(schema.ids))
    assert (labels[cloud] == 255).all() and (p[:, cloud] == PROB_NODATA).all()
    assert (p[:, ~cloud] != PROB_NODATA).all()


def test_a_full_disk_at_the_probability_file_leaves_no_label_map(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geoseg.pipelines import predict_parts

    real = predict_parts.label_cog_from_chunks

    def full_at_probabilities(path: Path, *args: object, **kw: object) -> int:
        if Path(path).name == "lc_probs.tif":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(predict_parts, "label_cog_from_chunks", full_at_probabilities)
    scene, _ = _scene(tmp_path, 60, 70)
    out = tmp_path / "out"
    out.mkdir()
    code, text = cli_run("predict", scene, "-m", tiny_checkpoint, "-o", out / "lc.tif",
                         "--probabilities", out / "lc_probs.tif", "--chunk", 144)  # fmt: skip
    assert code == 2 and "no space left" in text, text
    assert list(out.iterdir()) == []  # the label map, written first, is rolled back


@pytest.fixture(scope="module")
def instance_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_instance_checkpoint(tmp_path_factory.mktemp("ckpt") / "inst.safetensors")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("existing", "exists; pass --overwrite"),
        ("same_as_output", "both --probabilities and -o"),
        ("same_as_preview", "both --probabilities and --preview"),
        ("missing_folder", "does not exist; create it first"),
        ("instance_model", "--probabilities needs a per-pixel class model"),
        ("all_nodata", "every pixel of the input is nodata"),
    ],
)
def test_refusals_exit_2_in_one_line_and_write_nothing(
    tmp_path: Path, tiny_checkpoint: Path, instance_checkpoint: Path, case: str, message: str
) -> None:
    scene, data = _scene(tmp_path, 60, 70)
    out, probs, png = tmp_path / "lc.tif", tmp_path / "lc_probs.tif", tmp_path / "lc.png"
    model, extra = tiny_checkpoint, ["--preview", png]
    if case == "existing":
        probs.write_bytes(b"keep me")
    elif case == "same_as_output":
        probs = out
    elif case == "same_as_preview":
        probs = png
    elif case == "missing_folder":
        probs = tmp_path / "nowhere" / "p.tif"
    elif case == "instance_model":
        model, extra = instance_checkpoint, []
    elif case == "all_nodata":
        scene = write_raster(tmp_path / "empty.tif", 0 * data, nodata=0, descriptions=TINY_BANDS)
    before = sorted(p.name for p in tmp_path.iterdir())

    code, text = cli_run("predict", scene, "-m", model, "-o", out, "--probabilities", probs,
                         "--chunk", 48, *extra)  # fmt: skip

    assert code == 2, text
    assert text.count("\n") == 1 and message in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "existing":
        assert probs.read_bytes() == b"keep me"
