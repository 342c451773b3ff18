"""What to tell a user whose scene's bands do not fit a checkpoint's inputs.

A hint must be one that can work: ``--bands 1,2,3`` cannot feed a model that
needs six bands, and repeating it after the user tried it sends them in a loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import rasterio

from geoseg.errors import BandMismatchError
from geoseg.models.bands import band_match_keys

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
    head = f"{path}: the model needs {need} bands {list(model_bands)}"
    if have < need:
        return BandMismatchError(
            f"{head}; this file has only {have} {list(names)}, so no --bands choice can "
            f"feed it: give a scene with those bands (e.g. stack them with "
            "`gdalbuildvrt -separate`) or use a model made for these bands"
        )
    example = ",".join(str(i + 1) for i in range(need))
    chosen = "" if picked is None else f"; --bands chose {picked}"
    return BandMismatchError(
        f"{head}, the file has {have} {list(names)}{chosen}: pick {need} of them, in the "
        f"model's order, with --bands, e.g. --bands {example}"
    )


def band_names_guessed(path: str, index: Sequence[int], model_bands: Sequence[str]) -> bool:
    """True when the scene's bands at ``index`` (0-based) are not named as the model's."""
    with rasterio.open(path) as src:
        names = [src.descriptions[i] or "" for i in index]
    file_keys, model_keys = band_match_keys(names, model_bands)
    return file_keys != model_keys


def band_order_fix(index: Sequence[int]) -> str:
    """The ``--bands`` option that reads the same bands in the reverse order."""
    return "--bands " + ",".join(str(i + 1) for i in reversed(index))
