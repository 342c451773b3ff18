"""Read the small YAML files users write (workflows, training configs, class lists).

PyYAML's ``SafeLoader`` builds no Python objects beyond plain data, but it does
share a node between an anchor and every alias of it: a 1 kB "billion laughs"
file becomes a structure of 10^9 items the moment anything walks it (``str()``,
a schema check, JSON). :func:`read_yaml` counts the nodes the document would
have with every alias expanded and refuses it past :data:`MAX_NODES`, before
anything walks it; it also refuses text that is not UTF-8, oversized files,
nesting too deep to parse and a key written twice in one mapping (PyYAML keeps the
last silently: ``output: o9`` then ``output: o10`` would write to ``o10``), each
with one message naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ConfigError, InputNotFoundError

__all__ = ["MAX_BYTES", "MAX_NODES", "read_yaml"]

#: Largest YAML file read, in bytes (configs are a few hundred bytes).
MAX_BYTES = 1 << 20
#: Most nodes a document may hold with every alias expanded.
MAX_NODES = 10_000


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes under ``node`` (itself included) with every alias expanded.

    ``sizes`` memoizes shared nodes, so the count costs one visit per distinct
    node however many aliases point at it; ``open_`` holds the nodes being
    counted, so an alias to one of them (a structure holding itself) is refused.
    """
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("an alias refers to a node that contains it (a recursive structure)")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_nodes(child, sizes, open_)
        if total > MAX_NODES:
            raise ConfigError(
                f"expands to more than {MAX_NODES} values (anchors and aliases repeated "
                "within each other); write the values out or use fewer aliases"
            )
    open_.discard(key)
    sizes[key] = total
    return total


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_duplicate_keys(node: yaml.Node, where: str, seen: set[int]) -> None:
    """Refuse a mapping under ``node`` that holds one key twice, naming both lines.

    ``where`` is the node's place in the document (``predict``, ``steps[0]``); ``seen``
    holds the nodes already checked, so an alias costs nothing. Merge keys (``<<``) may
    repeat, and a key may override a merged one: that is what they are for.
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{where}[{i}]", seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    lines: dict[tuple[str, str], int] = {}
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name is not None and key.tag != _MERGE_TAG:
            line = key.start_mark.line + 1
            if (key.tag, name) in lines:
                place = f" in {where}" if where else ""
                raise ConfigError(
                    f"key {name!r} appears twice{place} (lines {lines[key.tag, name]} and "
                    f"{line}); YAML would keep only the last: delete one"
                )
            lines[key.tag, name] = line
        _refuse_duplicate_keys(value, f"{where}.{name}" if where else str(name), seen)


class _BoundedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that checks the expanded size of each document, and that no
    mapping holds a key twice, before building it."""

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            _expanded_nodes(node, {}, set())
            _refuse_duplicate_keys(node, "", set())
        return node


def _text(path: Path) -> str:
    """The file as text: refused when missing, too large or not UTF-8."""
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such file; check the path")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BYTES} bytes; is it the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "save the file as UTF-8"
        ) from exc


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The YAML document in ``path`` as plain data (dicts, lists, str, int, ...).

    Raises:
        InputNotFoundError: no such file.
        ConfigError: larger than :data:`MAX_BYTES`, not UTF-8, not YAML, nested too
            deep, aliases that expand past :data:`MAX_NODES` values, or a key written
            twice in one mapping.
    """
    p = Path(path)
    text = _text(p)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from exc
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to read; flatten the YAML") from None
