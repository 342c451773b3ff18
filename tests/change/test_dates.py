"""The shared ``t<date>_<band>`` parser behind Siamese models and date normalisation."""

from __future__ import annotations

import pytest

from geoseg.change.dates import band_date, date_groups


@pytest.mark.parametrize(
    ("name", "dated"),
    [
        ("t2_B04", (2, "B04")),
        ("t1_a_b", (1, "a_b")),  # the band part keeps its underscores
        ("t12_red", (12, "red")),
        ("B04", None),
        ("t_red", None),
        ("t1_", None),
        ("x1_red", None),
    ],
)
def test_band_date(name: str, dated: tuple[int, str] | None) -> None:
    assert band_date(name) == dated


def test_date_groups_in_date_order_with_stack_indices() -> None:
    names = ["t2_red", "t1_red", "t2_nir", "t1_nir"]
    assert date_groups(names) == [(1, [(1, "red"), (3, "nir")]), (2, [(0, "red"), (2, "nir")])]
    assert date_groups(["t1_red", "nir"]) is None
    assert date_groups([]) == []
