"""Training: loss goes down, checkpoints load into predict, runs repeat and resume exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import GeosegError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.pipelines import PredictOptions, predict_scene
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training import load_train_config, loop, train_model
from geoseg.training.loop import EpochReport
from geoseg.training.state import state_path
from geoseg.training.tasks import task_setup
from tests.training.helpers import assert_saved_model_is_the_best, write_change_mask

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_data(tmp_path_factory.mktemp("sample"), height=160, width=192, seed=3)


def _config(sample: dict[str, Path], out: Path, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "images": [str(sample["before"])], "labels": [str(sample["truth_before"])],
        "val_images": [str(sample["after"])], "val_labels": [str(sample["truth_after"])],
        "classes": TRUTH_SCHEMA.to_json(), "output": str(out), "arch": "unet",
        "encoder": "tu-resnet18", "options": SMALL_NET, "window": 32, "margin": 4,
        "epochs": 2, "steps_per_epoch": 6, "batch_size": 4, "lr": 1e-2, "device": "cpu",
    }  # fmt: skip
    base.update(kw)
    return load_train_config(None, **base)


def test_training_lowers_the_loss_and_predict_runs_the_checkpoint(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "model.safetensors"
    cfg = _config(sample, out, epochs=4)
    result = train_model(cfg)
    losses = [h.loss for h in result.history]
    assert losses[-1] < losses[0], losses
    assert_saved_model_is_the_best(cfg, result)
    _, meta = load_checkpoint(out)
    assert meta.schema == TRUTH_SCHEMA
    assert meta.bands == ("B02", "B03", "B04", "B08", "B11", "B12")
    with rasterio.open(sample["before"]) as src:
        data = src.read().astype(np.float64) * 1e-4
        valid = (src.read() != 0).any(axis=0)
    np.testing.assert_allclose(meta.normalization.mean, data[:, valid].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(meta.normalization.std, data[:, valid].std(axis=1), rtol=1e-4)
    assert meta.normalization.scale == pytest.approx(1e-4)
    assert meta.provenance["train"][0]["image"].endswith("scene_before.tif")
    lc = tmp_path / "lc.tif"
    predict_scene(sample["after"], str(out), lc, PredictOptions(device="cpu"))
    with rasterio.open(lc) as dst:
        labels = dst.read(1)
    assert set(np.unique(labels)) <= set(TRUTH_SCHEMA.ids) | {255}
    # the checkpoint, run by predict and scored here, has the recorded validation mIoU
    with rasterio.open(sample["truth_after"]) as src:
        truth = src.read(1)
    assert _miou(truth, labels, TRUTH_SCHEMA.ids) == pytest.approx(result.best_miou, abs=2e-3)
    assert not state_path(out).exists(), "the resume state is removed after a finished run"


def _miou(truth: np.ndarray, pred: np.ndarray, ids: tuple[int, ...]) -> float:
    """Mean IoU over the classes present in ``truth`` or ``pred`` (255 ignored in both)."""
    keep = (truth != 255) & (pred != 255)
    t, p = truth[keep], pred[keep]
    ious = [
        np.count_nonzero((t == c) & (p == c)) / np.count_nonzero((t == c) | (p == c))
        for c in ids
        if np.any(t == c) or np.any(p == c)
    ]
    return float(np.mean(ious))


def test_the_checkpoint_is_the_best_epoch_not_the_last(
    sample: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scripted validation scores rise, fall and tie: the best (the later of a tie) is kept."""
    scores = iter([0.30, 0.70, 0.50, 0.70, 0.60])
    scored: list[dict[str, torch.Tensor]] = []

    def scripted(cfg: Any) -> Any:
        def setup(cfg: Any, device: torch.device) -> Any:
            train, targets, meta, objective = task_setup(cfg)(cfg, device)

            def score(model: torch.nn.Module) -> float:
                scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
                return next(scores)

            return train, targets, meta, dataclasses.replace(objective, score=score)

        return setup

    monkeypatch.setattr(loop, "task_setup", scripted)
    out = tmp_path / "model.safetensors"
    result = train_model(_config(sample, out, epochs=5, steps_per_epoch=2))
    assert [h.val_miou for h in result.history] == [0.30, 0.70, 0.50, 0.70, 0.60]
    assert result.best_miou == 0.70
    tensors, meta = load_checkpoint(out)
    assert meta.metrics["val_miou"] == 0.70
    assert all(torch.equal(tensors[k], scored[3][k]) for k in tensors), "not epoch 4's weights"
    assert not all(torch.equal(tensors[k], scored[4][k]) for k in tensors)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def test_same_seed_gives_the_same_model(sample: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train_model(_config(sample, a, val_images=[], val_labels=[]))
    train_model(_config(sample, b, val_images=[], val_labels=[]))
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class _Stop(Exception):
    pass


def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    full, cut = tmp_path / "full.safetensors", tmp_path / "cut.safetensors"
    kw = {"val_images": [], "val_labels": [], "epochs": 3}
    train_model(_config(sample, full, **kw))

    def stop_after_first(report: EpochReport) -> None:
        if report.epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train_model(_config(sample, cut, **kw), stop_after_first)
    assert state_path(cut).exists()
    result = train_model(_config(sample, cut, resume=True, **kw))
    assert [h.epoch for h in result.history] == [1, 2, 3]
    wf, wc = _weights(full), _weights(cut)
    assert all(torch.equal(wf[k], wc[k]) for k in wf)


def test_existing_output_is_refused(sample: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep")
    from geoseg.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        train_model(_config(sample, out))
    assert out.read_bytes() == b"keep"


def test_a_chip_folder_gives_image_label_pairs(sample: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from geoseg.errors import InputNotFoundError
    from geoseg.training.config import chip_pairs

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    shutil.copy(sample["before"], tmp_path / "images" / "a.tif")
    shutil.copy(sample["truth_before"], tmp_path / "labels" / "a.tif")
    shutil.copy(sample["after"], tmp_path / "images" / "b.tif")
    with pytest.raises(InputNotFoundError, match="label chips missing"):
        chip_pairs(tmp_path)
    shutil.copy(sample["truth_after"], tmp_path / "labels" / "b.tif")
    cfg = _config(sample, tmp_path / "m.safetensors", images=None, labels=None, chips=str(tmp_path))
    assert [Path(p).name for p in cfg.images] == ["a.tif", "b.tif"]
    assert [Path(p).parent.name for p in cfg.labels] == ["labels", "labels"]


def test_change_task_trains_on_stacked_dates(sample: dict[str, Path], tmp_path: Path) -> None:
    from geoseg.io.checkpoint import read_checkpoint_meta
    from geoseg.io.stack import stack_dates

    stacked = stack_dates([sample["before"], sample["after"]], tmp_path / "ab.tif")
    write_change_mask(sample["truth_before"], sample["truth_after"], tmp_path / "change.tif")
    schema = [
        {"id": 0, "name": "same", "colour": [9, 9, 9]},
        {"id": 1, "name": "changed", "colour": [200, 0, 0]},
    ]
    out = tmp_path / "change.safetensors"
    cfg = _config(
        sample, out, images=[str(stacked)], labels=[str(tmp_path / "change.tif")], val_images=[],
        val_labels=[], classes=schema, task="change",
    )  # fmt: skip
    train_model(cfg)
    meta = read_checkpoint_meta(out)
    assert meta.task == "change" and len(meta.bands) == 12 and meta.bands[0] == "t1_B02"
    predict_scene(stacked, str(out), tmp_path / "map.tif", PredictOptions(device="cpu"))
    with rasterio.open(tmp_path / "map.tif") as dst:
        assert set(np.unique(dst.read(1))) <= {0, 1, 255}


@pytest.mark.parametrize(
    ("changed", "named"),
    [({"lr": 0.1}, "lr 0.01 -> 0.1"), ({"epochs": 4}, "epochs 3 -> 4"),
     ({"window": 64, "margin": 8}, "margin 4 -> 8; window 32 -> 64"),
     ({"seed": 5}, "seed 0 -> 5"),
     # another model: refused by name before its weights fail to load (was a
     # multi-thousand-character load_state_dict RuntimeError)
     ({"arch": "unetplusplus"}, "arch 'unet' -> 'unetplusplus'"),
     ({"encoder": "tu-resnet34"}, "encoder 'tu-resnet18' -> 'tu-resnet34'")],
)  # fmt: skip
def test_resume_with_other_options_is_refused(
    sample: dict[str, Path], tmp_path: Path, changed: dict[str, Any], named: str
) -> None:
    """The state keeps the optimizer's learning rate, the schedule's length and the
    window: a changed option would be ignored or mixed in while the checkpoint records
    it, so --resume refuses it, naming each option; the same options resume."""
    cut = tmp_path / "cut.safetensors"
    kw = {"val_images": [], "val_labels": [], "epochs": 3}

    def stop_after_first(report: EpochReport) -> None:
        if report.epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train_model(_config(sample, cut, **kw), stop_after_first)
    before = cut.read_bytes()
    with pytest.raises(GeosegError, match=f"the unfinished run used other options \\({named}\\)"):
        train_model(_config(sample, cut, resume=True, **(kw | changed)))
    assert cut.read_bytes() == before and state_path(cut).exists()
    result = train_model(_config(sample, cut, resume=True, device="cpu", **kw))
    assert [h.epoch for h in result.history] == [1, 2, 3]
