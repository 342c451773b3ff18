"""Checks of option values and the wording they share, used by every layer.

The option dataclasses call :func:`require_at_least` and :func:`require_finite`
from ``__post_init__`` so the Python API refuses what the command line refuses;
:func:`bands_count` and :func:`a_model_of` word counts and tasks in messages.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from geoseg.errors import ConfigError

__all__ = [
    "a_model_of",
    "bands_count",
    "parse_band_list",
    "require_at_least",
    "require_finite",
]


def bands_count(n: int) -> str:
    """``"1 band"``, ``"4 bands"``: a band count for messages."""
    return f"{n} band{'' if n == 1 else 's'}"


def a_model_of(task: str) -> str:
    """``"an instance model"``, ``"a semantic model"``: the article fits the task's sound."""
    return f"{'an' if task[:1].lower() in 'aeiou' else 'a'} {task} model"


def parse_band_list(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Split ``"1,2,B04"`` into ``("1", "2", "B04")``; None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(s.strip() for s in items if s.strip())


def require_at_least(owner: str, **limits: tuple[object, int]) -> None:
    """Refuse option values that are not whole numbers at least their minimum.

    The command line refuses ``--chunk 0`` with click's ranges; the option
    dataclasses call this from ``__post_init__`` so the Python API refuses the
    same values, before any file is opened.

    Args:
        owner: the options' class, named in the message (``PredictOptions``).
        limits: ``name=(value, minimum)``; a None value (the default) passes.

    Raises:
        ConfigError: a value is not an integer (bools included), or below its minimum.
    """
    for name, (value, minimum) in limits.items():
        if value is None:
            continue
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or int(value) < minimum:  # type: ignore[call-overload]
            raise ConfigError(f"{owner}: {name} must be a whole number >= {minimum}, got {value!r}")


def require_finite(owner: str, **limits: tuple[object, float, float]) -> None:
    """Refuse option values that are not finite numbers in ``[low, high]``.

    Args:
        owner: the options' class, named in the message.
        limits: ``name=(value, low, high)``; a None value (the default) passes.

    Raises:
        ConfigError: a value is not a finite number in its range.
    """
    for name, (value, low, high) in limits.items():
        if value is None:
            continue
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        number = float(value) if real else math.nan  # type: ignore[arg-type]
        if not math.isfinite(number) or not low <= number <= high:
            raise ConfigError(
                f"{owner}: {name} must be a finite number in [{low:g}, {high:g}], got {value!r}"
            )
