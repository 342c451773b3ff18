"""What plans and interrupted runs tell the user: a too-short schedule, what picks the
checkpoint, readable plan lines, resume advice that is true, a one-class model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import geoseg.training
import geoseg.training.plan_file
from geoseg.cli import cli
from geoseg.evaluation.metrics import metrics_from_confusion
from geoseg.pipelines.evaluate_checks import degenerate_warning
from geoseg.training.loop import EpochReport
from geoseg.training.plan import MIN_TRAIN_STEPS, choose_schedule, schedule_warning
from geoseg.training.plan_file import _scenes, key_lines
from geoseg.training.state import state_path
from tests.conftest import TINY_BANDS, textured_scene, write_raster


def test_a_budget_too_short_to_learn_warns_with_the_budget_that_is_not() -> None:
    epochs, steps = choose_schedule(step_s=2.0, budget_s=60)
    assert (epochs.value, steps.value) == (1, 24)
    # 100 steps at 2 s in 80 % of the budget: 250 s -> 5 min
    want = "1 epoch(s) x 24 steps = 24 steps, too few to learn"
    assert want in epochs.why and "a --time-budget of 5m gives 100 steps at 2 s" in epochs.why
    assert schedule_warning(2.0, 1, 24) is not None and MIN_TRAIN_STEPS == 100
    assert schedule_warning(0.5, 57, 50) is None
    assert "WARNING" not in choose_schedule(step_s=0.5, budget_s=1800)[0].why


def test_the_steps_comment_says_what_picks_the_checkpoint() -> None:
    alone = choose_schedule(2.0, 600)[1].why
    validated = choose_schedule(2.0, 600, validated=True)[1].why
    assert "validation score" not in alone
    assert "no validation data (--val-image), so the last epoch's weights" in alone
    assert "a validation score; the best-scoring epoch is the checkpoint" in validated


def test_plan_lines_read_as_text_not_python_reprs() -> None:
    text = ("window: 80\nclass_weights: {class_1: 5.7}\n"
            "options: {encoder_depth: 4, decoder_channels: [128, 64]}\n")  # fmt: skip
    assert key_lines(text) == [
        "  window: 80", "  class_weights: class_1 5.7",
        "  options: encoder_depth 4, decoder_channels [128, 64]",
    ]  # fmt: skip
    assert _scenes([(101, 100)]) == "1 scene of 101 x 100 px"
    assert _scenes([(64, 64), (64, 64)]) == "2 scenes of 64 x 64 px"
    assert _scenes([(101, 100), (64, 80)]) == "2 scenes (101 x 100, 64 x 80 px)"


def test_a_one_class_prediction_is_not_blamed_on_the_label_ids() -> None:
    # the model says "b" everywhere; the reference is a/b/c as trained on
    one = metrics_from_confusion(np.array([[0, 600, 0], [0, 300, 0], [0, 100, 0]]), "abc")
    text = degenerate_warning("lab.tif", "m.safetensors", one)
    assert text is not None and "m predicts b for 100.0% of the pixels" in text
    assert "under-trained?" in text and "label ids" not in text.replace("not the label ids", "")
    swapped = metrics_from_confusion(np.array([[0, 500], [500, 0]]), "ab")
    assert "probably do not match" in str(degenerate_warning("lab.tif", "m", swapped))


@pytest.fixture()
def pair(tmp_path: Path) -> list[Any]:
    image = write_raster(tmp_path / "img.tif", textured_scene(64, 64), descriptions=TINY_BANDS)
    labels = write_raster(tmp_path / "lab.tif", np.ones((1, 64, 64), np.uint8), nodata=255)
    (tmp_path / "c.yaml").write_text("- {id: 1, name: a, colour: [0, 0, 0]}\n")
    return ["train", "--image", image, "--labels", labels, "--classes", tmp_path / "c.yaml",
            "-o", tmp_path / "m.safetensors", "--device", "cpu"]  # fmt: skip


def _interrupt(monkeypatch: pytest.MonkeyPatch, epochs_done: int) -> None:
    def fake(cfg: Any, report: Any) -> None:
        for e in range(1, epochs_done + 1):
            Path(cfg.output).write_bytes(b"checkpoint")
            state_path(Path(cfg.output)).write_bytes(b"state")
            report(EpochReport(e, 5, 1.0, None, 1, 0.0, 0.0))
        raise KeyboardInterrupt

    monkeypatch.setattr(geoseg.training, "train_model", fake)


def test_interrupted_after_epoch_2_says_resume_and_rerun_names_resume_first(
    pair: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        _interrupt(m, 2)
        first = CliRunner().invoke(cli, [str(a) for a in pair])
    assert first.exit_code == 130
    assert "m.safetensors.resume holds the run after epoch 2: rerun with --resume" in first.output
    again = CliRunner().invoke(cli, [str(a) for a in pair])
    assert again.exit_code == 2
    assert again.output.endswith(
        "m.safetensors: exists, from an unfinished run (m.safetensors.resume): pass --resume "
        "to continue it, or --overwrite to start over (discards its progress)\n"
    ), again.output


def test_interrupted_in_epoch_1_says_nothing_was_saved(
    pair: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt(monkeypatch, 0)
    result = CliRunner().invoke(cli, [str(a) for a in pair])
    assert result.exit_code == 130
    assert "nothing was saved to resume; rerun without --resume" in result.output
    assert "rerun with --resume" not in result.output


def test_an_interrupted_command_without_resume_does_not_offer_it(
    pair: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(geoseg.training.plan_file, "write_plan", stop)
    args = ["plan", *pair[1:5], "-o", Path(str(pair[-3])).with_suffix(".yaml")]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 130 and "--resume" not in result.output
    assert "it does not resume: rerun it to start again" in result.output


def test_auto_rerun_over_an_unfinished_run_names_resume(pair: list[Any], tmp_path: Path) -> None:
    (tmp_path / "m.plan.yaml").write_text("epochs: 1\n")
    (tmp_path / "m.safetensors").write_bytes(b"checkpoint")
    state_path(tmp_path / "m.safetensors").write_bytes(b"state")
    result = CliRunner().invoke(cli, [str(a) for a in [*pair, "--auto"]])
    assert result.exit_code == 2
    assert "m.plan.yaml: exists, from an unfinished run (m.safetensors.resume): pass --resume" in (
        result.output
    )


def test_a_plan_on_data_of_twice_its_gsd_warns_and_trains(
    pair: list[Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from affine import Affine

    write_raster(tmp_path / "img20.tif", textured_scene(64, 64), descriptions=TINY_BANDS,
                 transform=Affine(20, 0, 500000, 0, -20, 5100000))  # fmt: skip
    write_raster(tmp_path / "lab20.tif", np.ones((1, 64, 64), np.uint8), nodata=255,
                 transform=Affine(20, 0, 500000, 0, -20, 5100000))  # fmt: skip
    (tmp_path / "plan.yaml").write_text(
        f"images: [{pair[2]}]\nlabels: [{pair[4]}]\nclasses: {pair[6]}\nepochs: 1\n"
        "steps_per_epoch: 1\nbatch_size: 1\nwindow: 32\nmargin: 4\ndevice: cpu\n"
        "options: {encoder_depth: 3, decoder_channels: [32, 16, 8]}\n"
        "provenance: {plan: {gsd_m: 10.0, dtype: uint16, band_tail_ratio: "
        "{B02: 2, B03: 2, B04: 2, B08: 2}}}\n"
    )
    args = ["train", "--plan", tmp_path / "plan.yaml", "--image", tmp_path / "img20.tif",
            "--labels", tmp_path / "lab20.tif", "-o", tmp_path / "m20.safetensors"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "plan.yaml: planned on other data: img20.tif has a GSD of 20 m, the plan 10 m" in said
