"""Instance segmentation across tiles: window ownership, seam merging, scene ids."""

from geoseg.stitching.ids import ChunkTable, InstanceIds, resolve_ids
from geoseg.stitching.panoptic import panoptic_block
from geoseg.stitching.protocol import (
    InstancePredictor,
    SemanticInstancePredictor,
    WindowInstances,
)
from geoseg.stitching.stitch import (
    ChunkPlan,
    InstanceLoader,
    plan_chunks,
    relabel_blocks,
    stitch_instances,
)

__all__ = [
    "ChunkPlan",
    "ChunkTable",
    "InstanceIds",
    "InstanceLoader",
    "InstancePredictor",
    "SemanticInstancePredictor",
    "WindowInstances",
    "panoptic_block",
    "plan_chunks",
    "relabel_blocks",
    "resolve_ids",
    "stitch_instances",
]
