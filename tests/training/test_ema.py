"""``ema``: the checkpoint holds the exponential moving average of the weights, resumes
exactly, and 0 leaves training as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.errors import ConfigError, GeosegError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.training import train_model
from geoseg.training.loop import EpochReport
from geoseg.training.state import state_path
from tests.training.test_loop import _config, sample  # noqa: F401  (fixture)

NO_VAL = {"val_images": [], "val_labels": []}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def test_checkpoint_is_the_hand_computed_average_of_every_step(
    sample: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Weights and BatchNorm statistics after each optimizer step, averaged by hand:
    e_1 = w_1, e_k = d e_(k-1) + (1 - d) w_k; the saved checkpoint is e_K."""
    steps: list[dict[str, torch.Tensor]] = []
    real_step = torch.optim.AdamW.step

    def recording_step(self: torch.optim.AdamW, *a: object, **k: object) -> object:
        out = real_step(self, *a, **k)
        model = recording_step.model  # type: ignore[attr-defined]
        steps.append({n: t.detach().clone() for n, t in model.state_dict().items()})
        return out

    real_init = torch.optim.swa_utils.AveragedModel.__init__

    def remember(self: object, model: torch.nn.Module, *a: object, **k: object) -> None:
        recording_step.model = model  # type: ignore[attr-defined]
        real_init(self, model, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    monkeypatch.setattr(torch.optim.swa_utils.AveragedModel, "__init__", remember)
    out = tmp_path / "ema.safetensors"
    decay = 0.6
    train_model(_config(sample, out, ema=decay, epochs=1, steps_per_epoch=4, **NO_VAL))
    assert len(steps) == 4
    expected = dict(steps[0])
    for w in steps[1:]:
        for name, value in w.items():
            if value.is_floating_point():  # (BatchNorm's step counters are not used)
                expected[name] = decay * expected[name] + (1 - decay) * value
    saved = _weights(out)
    assert set(saved) == set(expected)
    floats = [n for n, v in expected.items() if v.is_floating_point()]
    assert any("running_mean" in n for n in floats)  # BatchNorm statistics are averaged too
    for name in floats:
        torch.testing.assert_close(saved[name], expected[name], rtol=1e-5, atol=1e-6)
    last = steps[-1]
    assert any(not torch.equal(saved[n], last[n]) for n in saved if last[n].is_floating_point())


def test_resume_with_ema_equals_an_uninterrupted_run(
    sample: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    full, cut = tmp_path / "full.safetensors", tmp_path / "cut.safetensors"
    kw = {**NO_VAL, "epochs": 3, "ema": 0.9}
    train_model(_config(sample, full, **kw))

    class Stop(Exception):
        pass

    def stop_after_first(report: EpochReport) -> None:
        if report.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_model(_config(sample, cut, **kw), stop_after_first)
    assert state_path(cut).exists()
    # the recorded options are checked first (restore_state's own ema check is for
    # states written before options were recorded)
    with pytest.raises(GeosegError, match=r"used other options \(ema 0.9 -> 0.0\)"):
        train_model(_config(sample, cut, resume=True, **(kw | {"ema": 0.0})))
    train_model(_config(sample, cut, resume=True, **kw))
    wf, wc = _weights(full), _weights(cut)
    assert all(torch.equal(wf[k], wc[k]) for k in wf)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_out_of_range_decay_is_refused(
    sample: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    value: float,
) -> None:
    with pytest.raises(ConfigError, match="ema must be a finite number in"):
        _config(sample, tmp_path / "m.safetensors", ema=value)
