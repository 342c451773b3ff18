"""Change detection on label maps: alignment, transition matrices, accuracy, noise control."""

from geoseg.change.accuracy import StratifiedEstimate, sample_design, stratified_estimate
from geoseg.change.align import AlignedMaps, align_label_maps, read_label_map_info
from geoseg.change.mmu import apply_mmu, mmu_blocks
from geoseg.change.sampling import SamplePoints, stratified_sample
from geoseg.change.temporal import persistent_after
from geoseg.change.transitions import (
    TransitionMatrix,
    TransitionSink,
    transition_codes,
    transition_matrix,
)
from geoseg.change.zones import ZoneMasker, prepare_aoi

__all__ = [
    "AlignedMaps",
    "SamplePoints",
    "StratifiedEstimate",
    "TransitionMatrix",
    "TransitionSink",
    "ZoneMasker",
    "align_label_maps",
    "apply_mmu",
    "mmu_blocks",
    "persistent_after",
    "prepare_aoi",
    "read_label_map_info",
    "sample_design",
    "stratified_estimate",
    "stratified_sample",
    "transition_codes",
    "transition_matrix",
]
