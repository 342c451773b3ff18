"""Siamese change networks (geoseg/models/siamese.py) and the ``early`` alias."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import BandMismatchError, UnknownModelError
from geoseg.models import registry
from geoseg.models.siamese import SiameseChange, date_split, date_split_or_none, one_date_bands

PAIR = ("t1_red", "t1_green", "t1_blue", "t2_red", "t2_green", "t2_blue")
SMALL = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


@pytest.mark.parametrize(
    ("bands", "per_date"),
    [
        (PAIR, 3),
        (("t1_B04", "t2_B04"), 1),
        (("t1_a_b", "t2_a_b"), 1),  # names may hold underscores
        (("red", "green", "blue", "red", "green", "blue"), None),  # no dates named
        (("t1_red", "t1_green", "t2_red"), None),  # odd count
        (("t1_red", "t2_red", "t1_green", "t2_green"), None),  # interleaved
        (("t2_red", "t1_red"), None),  # dates swapped
        (("t1_red", "t1_green", "t2_green", "t2_red"), None),  # bands in another order
        (("t1_red", "t2_red", "t3_red", "t4_red"), None),  # four dates
        ((), None),
    ],
)
def test_date_split_by_band_names(bands: tuple[str, ...], per_date: int | None) -> None:
    assert date_split_or_none(bands) == per_date
    if per_date is None:
        with pytest.raises(BandMismatchError, match=r"geoseg stack before\.tif after\.tif"):
            date_split(bands)
    else:
        assert date_split(bands) == per_date


def test_one_date_bands_drop_the_date_prefix() -> None:
    assert one_date_bands(PAIR) == ("red", "green", "blue")


def _net(fusion: str) -> SiameseChange:
    torch.manual_seed(0)
    return SiameseChange("resnet18", PAIR, 2, fusion, **SMALL).eval()


def test_siam_diff_is_symmetric_in_the_dates_and_conc_is_not() -> None:
    x = torch.randn(2, 6, 32, 32)
    swapped = torch.cat([x[:, 3:], x[:, :3]], dim=1)
    with torch.no_grad():
        diff, conc = _net("diff"), _net("conc")
        assert torch.allclose(diff(x), diff(swapped), atol=1e-5)
        assert not torch.allclose(conc(x), conc(swapped), atol=1e-3)
        same = torch.cat([x[:, :3], x[:, :3]], dim=1)
        # identical dates: every fused feature of siam-diff is 0, whatever the pixels
        assert torch.allclose(diff(same), diff(torch.zeros_like(same)), atol=1e-5)


def test_one_shared_encoder_reads_one_date_and_conc_doubles_the_decoder_inputs() -> None:
    diff, conc = _net("diff"), _net("conc")
    first = next(p for p in diff.encoder.parameters() if p.ndim == 4)
    assert first.shape[1] == 3  # one date's bands, not six
    widths = diff.encoder.out_channels
    assert diff.decoder.blocks[0].conv1[0].in_channels == widths[-1] + widths[-2]
    assert conc.decoder.blocks[0].conv1[0].in_channels == 2 * (widths[-1] + widths[-2])
    assert diff.encoder_bands == ("red", "green", "blue")


def test_unknown_fusion_and_unstacked_bands_are_refused() -> None:
    with pytest.raises(UnknownModelError, match="fusion must be one of diff, conc"):
        SiameseChange("resnet18", PAIR, 2, "sum", **SMALL)
    with pytest.raises(BandMismatchError, match="not bands red, green"):
        SiameseChange("resnet18", ("red", "green"), 2, "diff", **SMALL)


@pytest.mark.parametrize(
    ("arch", "options", "multiple"),
    [("early", {}, 32), ("early", {"encoder_depth": 3}, 8), ("siam-diff", {}, 32),
     ("siam-conc", {"encoder_depth": 4}, 16)],
)  # fmt: skip
def test_window_multiples_of_the_change_archs(arch: str, options: dict, multiple: int) -> None:
    assert registry.window_multiple(arch, options) == multiple


def test_change_archs_are_trainable_choices() -> None:
    assert registry.architectures("change")[:2] == ("early", "unet")
    assert registry.architectures("change")[-2:] == ("siam-diff", "siam-conc")
    assert "siam-diff" not in registry.architectures("semantic")
