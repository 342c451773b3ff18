"""Siamese change networks: one shared smp encoder for both dates, one U-Net decoder.

FC-Siam-diff and FC-Siam-conc (Daudt, Le Saux & Boulch, "Fully convolutional
siamese networks for change detection", ICIP 2018): the same encoder (shared
weights) reads date 1 and date 2; at every scale the decoder gets ``|f1 - f2|``
(``siam-diff``: symmetric in the dates, as many channels as one date's features) or
``[f1, f2]`` concatenated (``siam-conc``: twice the channels, so the decoder's
``encoder_channels`` are doubled). Unlike the paper's decoder, which starts from
date 2's deepest features, the deepest fused features start it too: the model then
sees only what the dates share or not, never one date alone (diff) or both alike (conc).

Input is the pair ``geoseg stack`` writes: bands ``t1_*`` then ``t2_*`` with the same
names, split in half by :func:`date_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from geoseg.change.dates import date_groups
from geoseg.errors import BandMismatchError, UnknownModelError

__all__ = ["FUSIONS", "SiameseChange", "date_split", "date_split_or_none", "one_date_bands"]

#: ``--arch`` -> how the two dates' features meet.
FUSIONS = {"siam-diff": "diff", "siam-conc": "conc"}


def date_split_or_none(bands: Sequence[str]) -> int | None:
    """Bands per date when ``bands`` are ``t1_<names>`` then ``t2_<the same names>``, else None."""
    groups = date_groups(bands)
    # ``t01_red`` is date 1 to date_groups but not a name ``geoseg stack`` writes.
    if groups is None or not all(b.startswith(("t1_", "t2_")) for b in bands):
        return None
    if [t for t, _ in groups] != [1, 2]:
        return None
    (_, first), (_, second) = groups
    n = len(first)
    in_order = [i for i, _ in first + second] == list(range(2 * n))
    if len(second) != n or not in_order or [b for _, b in first] != [b for _, b in second]:
        return None
    return n


def date_split(bands: Sequence[str]) -> int:
    """Bands per date of a two-date stack (see :func:`date_split_or_none`).

    Raises:
        BandMismatchError: the bands do not name two dates with the same bands.
    """
    n = date_split_or_none(bands)
    if n is None:
        raise BandMismatchError(
            f"Siamese change models and date augmentation take two dates stacked by `geoseg "
            f"stack` (bands t1_*, then t2_* with the same names), not bands {', '.join(bands)}; "
            "stack the dates with `geoseg stack before.tif after.tif -o pair.tif`"
        )
    return n


def one_date_bands(bands: Sequence[str]) -> tuple[str, ...]:
    """The names of one date's bands (``t1_red`` -> ``red``): what the shared encoder reads."""
    return tuple(b.split("_", 1)[1] for b in bands[: date_split(bands)])


class SiameseChange(nn.Module):
    """A shared smp encoder over both dates, fused features, a U-Net decoder.

    Args:
        encoder: smp encoder name (``resnet18``, ``tu-resnet18``, ...), untrained.
        bands: the stacked pair's band names (``t1_*`` then ``t2_*``).
        num_classes: output channels.
        fusion: ``"diff"`` (``|f1 - f2|``) or ``"conc"`` (``[f1, f2]``).
        encoder_depth: encoder stages (3-5); the window multiple is ``2 ** encoder_depth``.
        decoder_channels: one per stage, as smp's ``Unet``.
        **decoder: more ``UnetDecoder`` arguments (``attention_type``, ...).

    ``forward``: ``(N, 2C, H, W) float32`` -> ``(N, num_classes, H, W)`` logits.
    """

    def __init__(
        self, encoder: str, bands: Sequence[str], num_classes: int, fusion: str,
        encoder_depth: int = 5, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        **decoder: Any,
    ) -> None:  # fmt: skip
        from segmentation_models_pytorch.base import SegmentationHead, initialization
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
        from segmentation_models_pytorch.encoders import get_encoder

        super().__init__()
        if fusion not in FUSIONS.values():
            raise UnknownModelError(f"fusion must be one of {', '.join(FUSIONS.values())}")
        self.per_date, self.fusion = date_split(bands), fusion
        #: the encoder's input bands (one date's names), for ``--encoder-weights``
        self.encoder_bands = one_date_bands(bands)
        self.encoder = get_encoder(encoder, in_channels=self.per_date, depth=encoder_depth)
        widths = tuple(self.encoder.out_channels)
        self.decoder = UnetDecoder(
            encoder_channels=widths if fusion == "diff" else tuple(2 * c for c in widths),
            decoder_channels=decoder_channels, n_blocks=encoder_depth, **decoder,
        )  # fmt: skip
        self.segmentation_head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        initialization.initialize_decoder(self.decoder)
        initialization.initialize_head(self.segmentation_head)

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Date 1's and date 2's features at one scale, fused."""
        return (a - b).abs() if self.fusion == "diff" else torch.cat([a, b], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 2C, H, W)`` -> ``(N, K, H, W)`` logits; both dates go through one encoder pass."""
        n, c = x.shape[0], self.per_date
        both = self.encoder(torch.cat([x[:, :c], x[:, c:]], dim=0))
        fused = [self.fuse(f[:n], f[n:]) for f in both]
        return self.segmentation_head(self.decoder(fused))
