"""Shared stand-ins of the mask-query model tests (Mask2Former, MaskFormer, components):
a module that reports an oracle scene's objects as perfect mask queries, and the
stitching of a predictor over a whole scene."""

from __future__ import annotations

import dask.array as da
import numpy as np
import torch

from geoseg.stitching import InstancePredictor, plan_chunks, relabel_blocks, stitch_instances
from geoseg.types import TileSpec
from tests.stitching.oracle import THING_SCHEMA


class PerfectQueries(torch.nn.Module):
    """Mask queries that report an oracle window (band 0 object id, band 1 class id) exactly.

    One query per object (its class at a probability in [0.6, 0.9] that depends on
    the object's id, mask logit +8 inside, -8 outside), one for the ground (stuff,
    0.98), the rest "no object".
    """

    queries = 48

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(THING_SCHEMA)
        probs = torch.full((len(x), self.queries, k + 1), 0.02 / k)
        probs[..., k] = 0.98
        masks = torch.full((len(x), self.queries, *x.shape[2:]), -8.0)
        for n, (ids, classes) in enumerate(x.numpy().astype(np.int64)):
            found = np.unique(ids[ids > 0])
            objects = [ids == 0, *(ids == i for i in found)]
            assert len(objects) <= self.queries
            for q, mask in enumerate(objects):
                channel = int(np.searchsorted(THING_SCHEMA.ids, classes[mask][0]))
                p = 0.98 if q == 0 else 0.6 + 0.03 * (int(found[q - 1]) * 7 % 11)
                probs[n, q] = (1 - p) / k
                probs[n, q, channel] = p
                masks[n, q][torch.from_numpy(mask)] = 8.0
        return probs, masks


def stitched(model: InstancePredictor, scene: np.ndarray, spec: TileSpec) -> np.ndarray:
    """``(2, H, W)`` scene ids and classes of ``model`` over ``scene`` (48 px chunks)."""
    _, h, w = scene.shape
    stage = np.zeros((h, w), np.uint32)
    ids = stitch_instances(
        da.from_array(scene, chunks=(2, 48, 48)), da.ones((h, w), dtype=bool, chunks=48),
        lambda: model, spec, stage, scheduler="sync",
    )  # fmt: skip
    out = np.zeros((2, h, w), np.uint32)
    relabel_blocks(plan_chunks(h, w, spec), lambda key: stage[key], ids, out)
    return out
