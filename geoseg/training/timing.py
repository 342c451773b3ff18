"""Where a training step's wall time goes: an opt-in hook of :func:`train_model`.

``train_model(cfg, timing=StepTimes())`` splits every step into the data pipeline
(window sampling, augmentation, normalization, copy to the device; then the
objective's target building before the model runs) and the model's own work
(forward, loss, backward, optimizer). Without ``timing`` (the default) the loop
installs no hook and records nothing.

The split inside the objective's loss uses forward hooks of the top-level module:
every family's loss builds its targets first and then calls ``model(x)`` (or
``model(images, targets)``), so the time from the loss call to the first forward
is target building. On a GPU the forward is asynchronous, so the split there is
approximate; the step's total is exact (the loop waits for the loss value).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["STEP_PARTS", "StepTimes"]

#: The parts of one step, in order (seconds each, see :class:`StepTimes`).
STEP_PARTS = ("batch", "targets", "forward", "loss", "update")


@dataclass
class StepTimes:
    """Per-step wall seconds of a training run, filled in by the loop.

    Attributes:
        steps: one row per step, ``(batch, targets, forward, loss, update)`` seconds:
            sampling + augmenting + normalizing the windows; the loss's work before
            the model's first forward (target building); the forward; the loss's work
            after it; backward, optimizer and scheduler steps.
        fit_s: wall seconds of the whole fit (steps plus validation and checkpoint
            writes), set when the fit ends.
    """

    steps: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    fit_s: float = 0.0
    _starts: list[float] = field(default_factory=list)
    _ends: list[float] = field(default_factory=list)

    def totals(self, skip: int = 0) -> dict[str, float]:
        """Seconds per part of :data:`STEP_PARTS` summed over the steps after the first ``skip``."""
        rows = self.steps[skip:]
        return {name: sum(r[i] for r in rows) for i, name in enumerate(STEP_PARTS)}

    def data_share(self, skip: int = 0) -> float:
        """``(batch + targets) / step total`` after the first ``skip`` steps (NaN: none)."""
        t = self.totals(skip)
        total = sum(t.values())
        return (t["batch"] + t["targets"]) / total if total > 0 else float("nan")

    def record(self, t0: float, t1: float, t2: float, t3: float) -> None:
        """One step: started ``t0``, batch ready ``t1``, loss returned ``t2``, done ``t3``.

        A loss that never called the model's forward counts wholly as forward;
        forwards outside ``[t1, t2]`` (validation between epochs) are ignored.
        """
        first = min((t for t in self._starts if t1 <= t <= t2), default=t1)
        last = max((t for t in self._ends if first <= t <= t2), default=t2)
        self.steps.append((t1 - t0, first - t1, last - first, t2 - last, t3 - t2))
        self._starts.clear()
        self._ends.clear()

    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[None]:
        """Hook ``model``'s forward for the duration (hooks removed after) and time the fit."""

        def before(module: nn.Module, args: Any) -> None:
            self._starts.append(time.perf_counter())

        def after(module: nn.Module, args: Any, output: Any) -> None:
            self._ends.append(time.perf_counter())

        handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.fit_s += time.perf_counter() - t0
            for h in handles:
                h.remove()
