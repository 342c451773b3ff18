"""What to tell a user whose scene's bands do not fit a checkpoint's inputs.

A hint must be one that can work: ``--bands 1,2,3`` cannot feed a model that
needs six bands, and repeating it after the user tried it sends them in a loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import rasterio

from geoseg.errors import BandMismatchError
from geoseg.models.bands import band_match_keys
from geoseg.types import bands_count

__all__ = ["band_count_error", "band_names_guessed", "band_order_fix"]


def band_count_error(
    path: str, names: Sequence[str], model_bands: Sequence[str], picked: int | None
) -> BandMismatchError:
    """The refusal when the bands chosen for a model are not as many as it needs.

    Args:
        path: the scene.
        names: the scene's band names (numbers where unnamed).
        model_bands: the checkpoint's input bands, in order.
        picked: how many bands ``--bands`` chose (None: not given).
    """
    need, have = len(model_bands), len(names)
    head = f"{path}: the model needs {bands_count(need)} {list(model_bands)}"
    if have < need:
        return BandMismatchError(
            f"{head}; this file has only {have} {list(names)}, so no --bands choice can "
            f"feed it: give a scene with those bands (e.g. stack them with "
            "`gdalbuildvrt -separate`) or use a model made for these bands"
        )
    chosen = "" if picked is None else f"; --bands chose {picked}"
    return BandMismatchError(
        f"{head}, the file has {have} {list(names)}{chosen}: pick {need} of them, in the "
        f"model's order, with --bands (1-based band numbers){_s2_example(have, model_bands)}"
    )


#: The bands of a 13-band Sentinel-2 L1C stack, in the standard order.
_S2_L1C_ORDER = ("b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b8a", "b9", "b10", "b11", "b12")


def _s2_example(have: int, model_bands: Sequence[str]) -> str:
    """``, e.g. --bands 2,3,4,8 ...`` where a 13-band file is likely a standard S2 stack.

    Only then can the positions of the model's bands be guessed; a made-up ``1,2,3,4``
    would feed the wrong bands silently, so other files get no numeric example.
    """
    keys = band_match_keys([], model_bands)[1]
    if have != len(_S2_L1C_ORDER) or not all(k in _S2_L1C_ORDER for k in keys):
        return ""
    example = ",".join(str(_S2_L1C_ORDER.index(k) + 1) for k in keys)
    return f", e.g. --bands {example} if it is a Sentinel-2 stack in the order B01-B12 with B8A"


def band_names_guessed(path: str, index: Sequence[int], model_bands: Sequence[str]) -> bool:
    """True when the scene's bands at ``index`` (0-based) are not named as the model's."""
    with rasterio.open(path) as src:
        names = [src.descriptions[i] or "" for i in index]
    file_keys, model_keys = band_match_keys(names, model_bands)
    return file_keys != model_keys


def band_order_fix(index: Sequence[int]) -> str:
    """The ``--bands`` option that reads the same bands in the reverse order."""
    return "--bands " + ",".join(str(i + 1) for i in reversed(index))
