"""Pack and restore everything a run needs to resume exactly where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import GeosegError
from geoseg.io.checkpoint import load_training_state, save_training_state

__all__ = ["interrupted_note", "restore_state", "save_state", "state_path", "unfinished_run"]


def state_path(output: Path) -> Path:
    """Where the resumable state of a run writing ``output`` lives (removed at the end)."""
    return output.with_name(output.name + ".resume")


def unfinished_run(output: Path, what: Path | None = None) -> str | None:
    """The refusal for ``what`` (default ``output``) existing while a run writing ``output``
    is unfinished (its state file is there), naming ``--resume`` first; None if none is."""
    if not state_path(output).exists():
        return None
    return (
        f"{what or output}: exists, from an unfinished run ({state_path(output).name}): pass "
        "--resume to continue it, or --overwrite to start over (discards its progress)"
    )


def interrupted_note(output: Path, last_epoch: int | None) -> str:
    """What an interrupted run writing ``output`` left: a resumable state, or nothing."""
    if state_path(output).exists():
        after = f" after epoch {last_epoch}" if last_epoch else ""
        return (
            f"{state_path(output).name} holds the run{after}: rerun with --resume to "
            "continue, or with --overwrite to start over"
        )
    return (
        "before the first epoch ended: nothing was saved to resume; rerun without --resume "
        "to start again"
    )


def save_state(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    epoch: int,
    extra: dict[str, Any],
    averaged: nn.Module | None = None,
) -> None:
    """Model weights, AdamW moments, both RNG states, the epoch counter and (``averaged``)
    the moving average of the weights."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors |= {f"ema.{k}": v for k, v in averaged.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        for name, value in slots.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value)
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {
        "epoch": epoch,
        "param_groups": opt_state["param_groups"],
        "numpy_rng": rng.bit_generator.state,
        **extra,
    }
    save_training_state(path, tensors, meta)


def restore_state(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    averaged: nn.Module | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load what :func:`save_state` wrote into ``model``, ``opt``, ``rng`` and ``averaged``
    (the moving average, when the run kept one); return its JSON.

    ``check`` sees the state's JSON before anything is loaded (the run's options: a
    model of another architecture, encoder or task is refused by name there, not by
    the mismatch of its weights).

    Raises:
        GeosegError: ``check`` refuses the state; its weights do not fit ``model`` (a
            state from another model); ``averaged`` is given but the state holds no
            moving average (the run was started without ``ema``), or the other way round.
    """
    tensors, meta = load_training_state(path)
    if check is not None:
        check(meta)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:  # missing/unexpected keys or other shapes
        raise GeosegError(
            f"{path}: the unfinished run trained another model (its weights do not fit "
            f"this one: {str(exc).splitlines()[0]}); resume it with the options it was "
            "started with, or start over without --resume (--overwrite)"
        ) from None
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    if bool(ema) != (averaged is not None):
        raise GeosegError(
            f"{path}: the unfinished run was started {'with' if ema else 'without'} ema; "
            "resume it with the same ema setting, or start over without --resume"
        )
    if averaged is not None:
        averaged.load_state_dict(ema)
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["torch_rng"])
    rng.bit_generator.state = meta["numpy_rng"]
    return meta
