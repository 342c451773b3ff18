"""Read a label raster's values as another class schema's ids, by class name.

A label raster that names its classes (``GEOSEG_CLASSES`` tag, as ``geoseg predict``
writes) may number them otherwise than the model or ``classes.yaml`` it is scored or
trained against (labels 0=water, 1=land; model 0=land, 1=water). Taking its values as
the model's ids then scores water as land and gives a confident wrong mIoU (0.76 on
the trial scene, exit 0). The names say what the values mean: when every label class
is one of the target's classes (names compared case-insensitively) the values are
mapped to the target's ids by name; when some are not, nothing says what they mean
and the raster is refused. A raster without the tag keeps its values as ids.
"""

from __future__ import annotations

import os

from geoseg.errors import InvalidRasterError
from geoseg.io.labels import CLASSES_TAG, read_class_schema
from geoseg.types import ClassSchema

__all__ = ["label_ids_by_name", "legend", "mapping_note"]


def legend(schema: ClassSchema, limit: int = 12) -> str:
    """``"0=land, 1=water"`` (the first ``limit`` classes, then ``...``)."""
    items = [f"{c.id}={c.name}" for c in schema.classes]
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def label_ids_by_name(
    labels: str | os.PathLike[str], target: ClassSchema, target_name: str, override: str = ""
) -> dict[int, int] | None:
    """Label value -> ``target`` class id, by class name; None where no remap is needed.

    Args:
        labels: the label raster.
        target: the classes its values are scored or trained as.
        target_name: names ``target`` in messages (the model, or the classes file).
        override: the fix that takes the values as ids on purpose, for the message
            (e.g. ``"--map-reference (value=class id)"``); "" for none but dropping the tag.

    Returns:
        None when ``labels`` has no class schema, or its classes have ``target``'s ids
        already (every label class id has the same name in ``target``), or ``target``
        repeats a name (names do not say which id then); else the value -> id map of
        every label class (values outside the label schema are left out).

    Raises:
        InvalidRasterError: a label class whose name is no class of ``target``; the
            message names the file, both class lists and the fixes.
    """
    own = read_class_schema(labels)
    if own is None:
        return None
    by_name = {c.name.casefold(): c.id for c in target.classes}
    if len(by_name) != len(target):
        return None
    missing = [c.name for c in own.classes if c.name.casefold() not in by_name]
    if missing:
        raise InvalidRasterError(
            f"{labels}: its classes ({legend(own)}) are not all classes of {target_name} "
            f"({legend(target)}): {', '.join(repr(n) for n in missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not, so its values cannot be read by "
            f"name; relabel it in {target_name}'s classes, or drop its {CLASSES_TAG} tag "
            f"(`gdal_edit.py -mo {CLASSES_TAG}= {os.fspath(labels)}`)"
            f"{f' or give {override}' if override else ''} to take its values as class ids "
            "on purpose"
        )
    mapping = {c.id: by_name[c.name.casefold()] for c in own.classes}
    return None if all(k == v for k, v in mapping.items()) else mapping


def mapping_note(
    labels: str | os.PathLike[str], mapping: dict[int, int], target: ClassSchema,
    target_name: str,
) -> str:  # fmt: skip
    """The one line that says a label raster's values were mapped by name."""
    names = {c.id: c.name for c in target.classes}
    pairs = ", ".join(f"{v}->{c} ({names[c]})" for v, c in sorted(mapping.items()))
    return f"{labels}: its classes are {target_name}'s under other ids; read by name: {pairs}"
