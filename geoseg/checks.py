"""Checks of option values and the wording they share, used by every layer.

The option dataclasses call :func:`require_at_least` and :func:`require_finite`
from ``__post_init__`` so the Python API refuses what the command line refuses;
:func:`bands_count` and :func:`a_model_of` word counts and tasks in messages.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

from geoseg.errors import ConfigError

__all__ = [
    "a_model_of",
    "bands_count",
    "class_entry_fields",
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


#: What each class of a class list holds (README, "Training": ``classes.yaml``).
CLASS_FIELDS = ("id", "name", "colour")
_CLASS_EXAMPLE = "{id: 2, name: forest, colour: [27, 120, 55]}"


def _is_integer(value: object, low: int, high: int) -> bool:
    """``value`` is a whole number (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    number = float(value)
    return number.is_integer() and low <= number <= high


def class_entry_fields(k: int, entry: object) -> tuple[int, str, tuple[int, int, int], bool]:
    """``(id, name, (r, g, b), is_thing)`` of entry ``k`` (0-based) of a class list.

    Raises:
        ConfigError: not a mapping, without id, name or colour, or an id or colour that
            is not whole numbers; the message names the entry and the field.
    """
    where = f"class entry {k + 1}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {_CLASS_EXAMPLE}, got {entry!r:.80}")
    known = [f"{f} {entry[f]!r:.40}" for f in ("id", "name") if f in entry]
    where += f" ({', '.join(known)})" if known else ""
    missing = [f for f in CLASS_FIELDS if f not in entry]
    if missing:
        spelled = " (spelled 'colour')" if "color" in entry and "colour" in missing else ""
        raise ConfigError(
            f"{where} has no {' and no '.join(missing)}{spelled}; each class needs an id, a "
            f"name and a colour (required, [r, g, b] 0-255), e.g. {_CLASS_EXAMPLE}"
        )
    if not _is_integer(entry["id"], -(2**63), 2**63):  # the schema checks the range
        raise ConfigError(f"{where}: id must be a whole number 0-254, got {entry['id']!r:.40}")
    colour = entry["colour"]
    if not (
        isinstance(colour, Sequence) and not isinstance(colour, str) and len(colour) == 3
        and all(_is_integer(c, 0, 255) for c in colour)
    ):  # fmt: skip
        raise ConfigError(f"{where}: colour must be [r, g, b], each 0-255, got {colour!r:.40}")
    r, g, b = (int(c) for c in colour)
    return int(entry["id"]), str(entry["name"]), (r, g, b), bool(entry.get("is_thing", False))
