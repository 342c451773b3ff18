"""The training loop's opt-in step timing (bench_train.py): split, sums, off by default."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training import load_train_config, loop, train_model
from geoseg.training.tasks import task_setup
from geoseg.training.timing import STEP_PARTS, StepTimes

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
#: Seconds the scripted objective spends "building targets" before the model runs.
TARGET_S = 0.03


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_data(tmp_path_factory.mktemp("timing"), height=64, width=64, seed=1)


def _config(sample: dict[str, Path], out: Path) -> Any:
    return load_train_config(
        None, images=[str(sample["before"])], labels=[str(sample["truth_before"])],
        val_images=[str(sample["after"])], val_labels=[str(sample["truth_after"])],
        classes=TRUTH_SCHEMA.to_json(), output=str(out), arch="unet", encoder="tu-resnet18",
        options=SMALL_NET, window=32, margin=4, epochs=2, steps_per_epoch=2, batch_size=2,
        device="cpu",
    )  # fmt: skip


def _slow_targets(models: list[torch.nn.Module]) -> Any:
    """A setup whose loss sleeps TARGET_S before the model (as target building does)."""

    def scripted(cfg: Any) -> Any:
        def setup(cfg: Any, device: torch.device) -> Any:
            train, targets, meta, objective = task_setup(cfg)(cfg, device)

            def loss(model: torch.nn.Module, x: torch.Tensor, batch: Any) -> torch.Tensor:
                models.append(model)
                hooked = bool(model._forward_pre_hooks or model._forward_hooks)
                models.append(hooked)  # type: ignore[arg-type]
                time.sleep(TARGET_S)
                return objective.loss(model, x, batch)

            return train, targets, meta, dataclasses.replace(objective, loss=loss)

        return setup

    return scripted


def test_step_times_split_the_steps_and_sum_within_the_wall_time(
    sample: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(loop, "task_setup", _slow_targets(seen))
    timing = StepTimes()
    t0 = time.perf_counter()
    train_model(_config(sample, tmp_path / "m.safetensors"), timing=timing)
    wall = time.perf_counter() - t0
    assert len(timing.steps) == 4 and all(len(r) == len(STEP_PARTS) for r in timing.steps)
    assert all(v >= 0 for r in timing.steps for v in r)
    assert sum(map(sum, timing.steps)) <= timing.fit_s <= wall
    # the sleep lies between the loss call and the model's forward: target building
    assert all(TARGET_S <= r[1] < TARGET_S + 0.05 for r in timing.steps), timing.steps
    assert all(r[2] > 0 for r in timing.steps)  # the forward itself was seen
    totals = timing.totals(skip=2)
    assert totals["targets"] >= 2 * TARGET_S
    share = timing.data_share(skip=2)
    assert share == pytest.approx((totals["batch"] + totals["targets"]) / sum(totals.values()))
    model = seen[0]
    assert seen[1] is True and not model._forward_pre_hooks and not model._forward_hooks


def test_timing_is_off_by_default(
    sample: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(loop, "task_setup", _slow_targets(seen))

    def refuse(*args: Any) -> None:
        raise AssertionError("timing recorded without being asked for")

    monkeypatch.setattr(StepTimes, "record", refuse)
    train_model(_config(sample, tmp_path / "m.safetensors"))
    assert seen[1::2] == [False] * 4  # no forward hook on the model in any step


def test_a_loss_that_never_calls_the_model_counts_as_forward() -> None:
    timing = StepTimes()
    timing.record(0.0, 1.0, 3.0, 4.0)
    assert timing.steps == [(1.0, 0.0, 2.0, 0.0, 1.0)]
    assert timing.data_share() == pytest.approx(0.25)
