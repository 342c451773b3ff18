"""``geoseg predict --mask-clouds MODEL``: cloud and shadow pixels become nodata.

A cloud model (e.g. a ukis-csmask U-Net brought in with ``geoseg import``) runs
over the same scene with its own window, margin and bands, on the scene's own
pixel grid: nothing is resampled, so a model trained at 30 m sees a 10 m scene's
clouds three times larger in pixels (see README, "Bring your own model"; the
shared check in :mod:`geoseg.resolution`, run by :func:`prepare_model_input`, warns
at 1.5x and refuses past 4x). Its
map is rechunked to the land-cover map's chunks and every pixel it labels with a
cloud or shadow class is set to nodata (255) in every output band, so change
detection, which skips nodata, never counts a cloud as a change.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dask.array as da

from geoseg.errors import GeosegError
from geoseg.models.cache import load_predictor
from geoseg.tiling.infer import predict_blocks
from geoseg.types import NODATA_LABEL, ClassSchema

if TYPE_CHECKING:  # predict imports this module when a run asks for it
    from geoseg.pipelines.predict import PredictOptions

__all__ = ["MASKED_WORDS", "apply_cloud_mask", "cloud_classes"]

log = logging.getLogger(__name__)

#: A class of the cloud model is masked when its name holds one of these words.
MASKED_WORDS = ("cloud", "shadow")


def cloud_classes(schema: ClassSchema, model: str) -> tuple[int, ...]:
    """Ids of the classes named cloud or shadow (``cloud``, ``thin cloud``, ``cloud shadow``).

    Raises:
        GeosegError: the model has no such class (it is not a cloud model).
    """
    ids = tuple(c.id for c in schema.classes if any(w in c.name.lower() for w in MASKED_WORDS))
    if not ids:
        raise GeosegError(
            f"{model}: --mask-clouds needs a model with cloud or shadow classes, this one has "
            f"{', '.join(schema.names)}; import a cloud model with `geoseg import`"
        )
    return ids


def apply_cloud_mask(
    path: str,
    labels: da.Array,
    model: str,
    opts: PredictOptions,
    chunks: Sequence[tuple[int, ...]],
) -> da.Array:
    """``labels`` ``(bands, H, W) uint8`` with the cloud model's cloud/shadow pixels at 255.

    Args:
        path: the scene.
        labels: the lazy land-cover map (class band, optionally confidence).
        model: the cloud model checkpoint.
        opts: the run's :class:`~geoseg.pipelines.predict.PredictOptions`; the cloud
            model uses its own window, margin and bands, and the run's device,
            scheduler and chunk size.
        chunks: ``labels``' chunks along y and x.
    """
    from geoseg.pipelines.predict import prepare_model_input

    own = dataclasses.replace(
        opts, window=None, margin=None, bands=None, confidence=False, mask_clouds=None,
        batch_size=None, normalize_dates=None, normalize_to=None,
    )  # fmt: skip
    scene, spec, schema, tile = prepare_model_input(path, model, own)
    masked = cloud_classes(schema, model)
    clouds = predict_blocks(
        scene.data.data, scene.valid, functools.partial(load_predictor, spec), tile,
        schema.ids, False,
    )[0]  # fmt: skip
    cloudy = da.isin(clouds, list(masked)).rechunk(tuple(chunks))
    return da.where(cloudy[None], NODATA_LABEL, labels).astype(labels.dtype)
