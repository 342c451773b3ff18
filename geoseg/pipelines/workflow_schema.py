"""The typed schema of a workflow file: every key, its type and its range.

A schema is a mapping of key -> check; a check takes the YAML value and its
path in the file (``predict.window``) and returns the value to use, or raises
:class:`~geoseg.errors.ConfigError` naming that path, what was expected and what
was found (``predict.window: expected an integer >= 1, got 'abc'``). Unknown
keys are refused with the list of valid ones. Hand-written rather than a schema
library: a dozen keys do not justify a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from geoseg.errors import ConfigError

__all__ = [
    "CHANGE_OPTIONS",
    "FOCUS",
    "PREDICT_OPTIONS",
    "Check",
    "check_mapping",
    "flag",
    "integer",
    "number",
    "text",
    "texts",
]

#: ``check(value, where)`` -> the value to use; raises ConfigError naming ``where``.
Check = Callable[[Any, str], Any]


def _shown(value: Any) -> str:
    """``repr`` of a YAML value, cut short (a list may hold thousands of items)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _wrong(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {_shown(value)}")


def integer(minimum: int, optional: bool = False) -> Check:
    """An integer ``>= minimum`` (YAML ``true`` is not 1); ``null`` too when ``optional``."""

    def check(value: Any, where: str) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _wrong(where, f"an integer >= {minimum}", value)
        return value

    return check


def number(minimum: float, maximum: float = math.inf, open_low: bool = False) -> Check:
    """A finite number in ``[minimum, maximum)`` (``(minimum, ...)`` when ``open_low``), or null."""
    low = f"> {minimum}" if open_low else f">= {minimum}"
    expected = f"a number {low}" + (f" and < {maximum}" if maximum < math.inf else "")

    def check(value: Any, where: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong(where, expected, value)
        inside = value > minimum if open_low else value >= minimum
        if not (math.isfinite(value) and inside and value < maximum):
            raise _wrong(where, expected, value)
        return float(value)

    return check


def text(choices: Sequence[str] = (), optional: bool = False) -> Check:
    """Non-empty text, one of ``choices`` when given; ``null`` too when ``optional``."""
    expected = f"one of {', '.join(choices)}" if choices else "text"

    def check(value: Any, where: str) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or (choices and value not in choices):
            raise _wrong(where, expected, value)
        return value

    return check


def texts(
    minimum: int = 1, one: str = "a name", many: str = "names", numbers: bool = False
) -> Check:
    """A list of at least ``minimum`` texts (and integers, when ``numbers``), as strings.

    ``one`` and ``many`` name an item and the items in messages. A lone string is
    refused rather than read as a list of its letters.
    """
    kinds = (str, int) if numbers else (str,)
    expected = f"a list of {many}" + (f" (at least {minimum})" if minimum > 1 else "")

    def check(value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            raise _wrong(where, f"{expected}, e.g. [{value}]", value)
        if not isinstance(value, list) or len(value) < minimum:
            raise _wrong(where, expected, value)
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, kinds) or item == "":
                raise _wrong(f"{where}[{i}]", one, item)
        return tuple(str(v) for v in value)

    return check


def flag(value: Any, where: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise _wrong(where, "true or false", value)
    return value


_BAND_LIST = texts(1, "a band name or number", "band names or numbers", numbers=True)


def _bands(value: Any, where: str) -> tuple[str, ...] | None:
    return None if value is None else _BAND_LIST(value, where)


def _roles(value: Any, where: str) -> dict[str, int]:
    """``{red: 3, nir: 4}``: spectral role -> 1-based band number."""
    if not isinstance(value, dict):
        raise _wrong(where, "a mapping of role: band number, e.g. {red: 3, nir: 4}", value)
    out = {}
    for role, band in value.items():
        if not isinstance(role, str) or not role:
            raise _wrong(where, "role names as keys", role)
        out[role.lower()] = integer(1)(band, f"{where}.{role}")
    return out


def check_mapping(
    value: Any, schema: Mapping[str, Check], where: str, required: Sequence[str] = ()
) -> dict[str, Any]:
    """``value`` checked key by key against ``schema``; ``where`` names it in messages.

    Raises:
        ConfigError: not a mapping, an unknown or missing key, or a value its check refuses.
    """
    at = f"{where}: " if where else ""
    if not isinstance(value, dict):
        raise ConfigError(f"{at}expected a mapping of key: value, got {_shown(value)}")
    for key in value:
        if key not in schema:
            raise ConfigError(
                f"{at}unknown key {_shown(key)}; valid keys: {', '.join(sorted(schema))}"
            )
    missing = [k for k in required if k not in value]
    if missing:
        raise ConfigError(f"{at}missing key(s) {', '.join(missing)}")
    prefix = f"{where}." if where else ""
    return {k: schema[k](v, prefix + k) for k, v in value.items()}


#: ``predict:`` keys, the :class:`~geoseg.pipelines.predict.PredictOptions` fields a
#: workflow may set (``overwrite`` comes from ``geoseg run --overwrite``; one
#: ``preview`` path cannot serve every date).
PREDICT_OPTIONS: dict[str, Check] = {
    "window": integer(1, optional=True),
    "margin": integer(0, optional=True),
    "chunk": integer(1),
    "blend": text(("trim", "hann")),
    "batch_size": integer(1, optional=True),
    "device": text(),
    "confidence": flag,
    "bands": _bands,
    "band_roles": _roles,
    "sensor": text(optional=True),
    "assume_crs": text(optional=True),
    "scheduler": text(),
    "workers": integer(1, optional=True),
    "resume": flag,
    "torch_threads": integer(1, optional=True),
    "precision": text(("auto", "fp32", "fp16", "bf16")),
    "ignore_gsd": flag,
    "tta": text(("none", "flips", "d4")),
}


def _change_prob(value: Any, where: str) -> float:
    """The posterior rule's ``min_change_prob``: a number in [0.5, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 1:
        raise _wrong(where, "a number in 0.5-1 (e.g. 0.7)", value)
    return float(value)


#: ``change:`` keys, the :class:`~geoseg.pipelines.change.ChangeOptions` fields a
#: workflow may set (``aoi`` and ``aoi_field`` are top-level keys; reference
#: samples are labelled after a first run, so ``geoseg change --reference`` takes them;
#: with ``rule: posterior`` the predict step writes each map's probability file, so
#: ``probabilities_of`` is never needed).
CHANGE_OPTIONS: dict[str, Check] = {
    "rule": text(("map", "posterior")),
    "min_change_prob": _change_prob,
    "consistency": integer(1),
    "chunk": integer(1),
    "scheduler": text(),
    "workers": integer(1, optional=True),
    "thumbnail_px": integer(16),
    "mmu_ha": number(0.0),
    "samples_se": number(0.0, 1.0, open_low=True),
}

#: ``focus:`` keys.
FOCUS: dict[str, Check] = {"name": text(), "from": texts(), "to": texts()}
