"""Parse JSON read from a user's file: bounded in size and depth, one error naming the file.

Python's JSON parser recurses once per nesting level: a text nested 200 000 deep
ends in ``RecursionError`` (or worse, deep in a library) rather than a message,
and a huge one costs memory before anything is checked. Every JSON geoseg reads
back from a file a user can hand it (checkpoint metadata, raster tags, ``--resume``
manifests, lock files, GeoParquet metadata) goes through :func:`parse_json`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from geoseg.errors import GeosegError

__all__ = ["MAX_JSON_CHARS", "MAX_JSON_DEPTH", "nesting_depth", "parse_json"]

#: Default bounds: characters of text, and how deep ``[``/``{`` may nest. geoseg's own
#: JSON nests at most 4 levels (a PROJJSON CRS in GeoParquet metadata, about 8).
MAX_JSON_CHARS = 1 << 20
MAX_JSON_DEPTH = 32
#: A JSON string (escapes included) or one bracket: strings are skipped whole.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def nesting_depth(text: str) -> int:
    """How deep ``[``/``{`` nest in JSON ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def parse_json(
    raw: str | bytes,
    source: object,
    what: str = "JSON",
    error: type[GeosegError] = GeosegError,
    fix: str = "the file is damaged or was not written by geoseg",
    max_chars: int = MAX_JSON_CHARS,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The value of ``raw`` JSON, refused past ``max_chars`` characters or ``max_depth``.

    Args:
        raw: the JSON text (bytes are decoded as UTF-8).
        source: the file it comes from, first in every message.
        what: what the text is, e.g. ``"metadata JSON"``, ``"GEOSEG_CLASSES tag"``
            (messages read "FILE: malformed WHAT: ...").
        error: the :class:`GeosegError` leaf to raise.
        fix: what the user can do, last in every message.
        max_chars, max_depth: the bounds.

    Raises:
        error: too long, too deep, not UTF-8 or not JSON; one line naming ``source``.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise error(f"{source}: malformed {what}: not UTF-8 text ({exc}); {fix}") from None
    if len(text) > max_chars:
        raise error(
            f"{source}: malformed {what}: it holds {len(text)} characters, more than the "
            f"{max_chars} geoseg reads; {fix}"
        )
    if (depth := nesting_depth(text)) > max_depth:
        raise error(
            f"{source}: malformed {what}: it nests {depth} levels deep (geoseg reads at most "
            f"{max_depth}); {fix}"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{source}: malformed {what}: not JSON ({str(exc)[:200]}); {fix}") from None
