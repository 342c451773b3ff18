"""The global window grid and the chunk kernel of tiled inference."""

from geoseg.tiling.grid import chunk_starts, hann_weight, padded_size, reflect_indices
from geoseg.tiling.infer import confidence_to_uint8, predict_blocks

__all__ = [
    "chunk_starts",
    "confidence_to_uint8",
    "hann_weight",
    "padded_size",
    "predict_blocks",
    "reflect_indices",
]
