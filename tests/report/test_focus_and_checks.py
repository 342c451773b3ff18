"""The report's headline (focus figure, error-adjusted) and its implausibility warnings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from geoseg.change.accuracy import stratified_estimate
from geoseg.change.matrix import TransitionMatrix
from geoseg.errors import GeosegError
from geoseg.report.checks import implausible_change, years_between
from geoseg.report.focus import adjusted_area, focus_headline, largest_headlines
from geoseg.report.numbers import AreaFormat

NAMES = ("forest", "grassland", "water")


@dataclass(frozen=True)
class _Focus:
    name: str
    from_classes: tuple[str, ...]
    to_classes: tuple[str, ...]


DEFOREST = _Focus("deforestation", ("forest",), ("grassland", "water"))


def _matrix(pixels: list[list[int]]) -> TransitionMatrix:
    px = np.asarray(pixels, dtype=np.int64)
    return TransitionMatrix((1, 2, 3), NAMES, px * 100.0, px, 0.0, 0)  # 10 m pixels


def _text(m2: float) -> str:
    return AreaFormat(100.0).text(m2)


PLAUSIBLE = [[9000, 500, 10], [100, 5000, 0], [0, 0, 2000]]


def test_focus_headline_sums_the_focus_transitions() -> None:
    head = focus_headline(_matrix(PLAUSIBLE), DEFOREST)
    assert (head.label, head.pixels, head.map_m2) == ("deforestation", 510, 51_000.0)
    assert head.detail == "forest -> grassland, water"
    assert head.adjusted_m2 is None and head.ci95_m2 is None


def test_focus_with_an_unknown_class_is_refused() -> None:
    with pytest.raises(GeosegError, match=r"\['frest'\].*forest"):
        focus_headline(_matrix(PLAUSIBLE), _Focus("x", ("frest",), ("water",)))


def test_without_focus_the_largest_transitions_lead() -> None:
    heads = largest_headlines(_matrix(PLAUSIBLE), 2)
    assert [(h.label, h.pixels) for h in heads] == [
        ("forest -> grassland", 500), ("grassland -> forest", 100)
    ]  # fmt: skip


def test_adjusted_area_of_one_code_equals_the_olofsson_estimate() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 30, (4, 4)) + np.diag([60, 50, 40, 30])
    mapped = np.array([2e6, 5e5, 3e5, 1e6])
    est = stratified_estimate(counts, mapped)
    for code in range(4):
        area, ci = adjusted_area(counts, mapped, [code])
        assert area == pytest.approx(est.area[code], rel=1e-12)
        assert ci == pytest.approx(est.area_ci95[code], rel=1e-12)


def test_adjusted_area_of_a_union_counts_the_covariance() -> None:
    # Two reference classes always confused with each other: each alone is uncertain,
    # their union is known exactly (every sample of the two strata falls in it).
    counts = np.array([[10, 10, 0], [10, 10, 0], [0, 0, 20]])
    mapped = np.array([1e4, 1e4, 2e4])
    area, ci = adjusted_area(counts, mapped, [0, 1])
    assert area == pytest.approx(2e4) and ci == pytest.approx(0.0)
    alone = [adjusted_area(counts, mapped, [c])[1] for c in (0, 1)]
    assert min(alone) > 0


def test_focus_headline_with_reference_counts_is_adjusted() -> None:
    m = _matrix(PLAUSIBLE)
    counts = np.diag(np.full(9, 20))  # a perfect sample: adjusted = mapped, no uncertainty
    head = focus_headline(m, DEFOREST, counts)
    assert head.adjusted_m2 == pytest.approx(51_000.0) and head.ci95_m2 == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("first", "last", "years"),
    [("2024-07-15", "2025-07-20", 370 / 365.25), ("2019", "2023", None),
     (None, "2023-01-01", None), ("2020-01-01T10:00", "2022-01-01", 731 / 365.25)],
)  # fmt: skip
def test_years_between_iso_dates(first: str | None, last: str, years: float | None) -> None:
    assert years_between(first, last) == (pytest.approx(years) if years else None)


def test_a_plausible_result_has_no_warning() -> None:
    assert implausible_change(_matrix(PLAUSIBLE), 1.0, DEFOREST, _text) == []


def test_a_transition_over_a_fifth_of_its_class_in_a_year_is_flagged() -> None:
    m = _matrix([[9000, 500, 10], [1400, 5000, 0], [0, 0, 2000]])  # 21.9 % of grassland
    (warning,) = implausible_change(m, 1.0, None, _text)
    assert warning.startswith("grassland -> forest: 14.00 ha is 22 % of the first date's")
    assert "20 %" in warning and "classification noise" in warning
    # over three years up to 1 - 0.8**3 = 48.8 % is plausible; unknown dates: one interval
    assert implausible_change(m, 3.0, None, _text) == []
    assert len(implausible_change(m, None, None, _text)) == 1


def test_a_small_class_is_never_flagged() -> None:
    m = _matrix([[9000, 0, 0], [0, 5000, 0], [0, 49, 10]])  # 83 % of water, but 49 px
    assert implausible_change(m, 1.0, None, _text) == []


def test_net_gain_of_the_focus_source_contradicts_the_study() -> None:
    # the demo workflow's numbers: forest lost 418.54 ha and gained 788.29 ha
    m = _matrix([[187_005, 39_984, 1_837], [76_643, 350_185, 0], [2_123, 0, 26_592]])
    warnings = implausible_change(m, 1.0, DEFOREST, _text)
    assert warnings == [
        "deforestation: forest grew by 369.45 ha on net (787.66 ha became forest, 418.21 ha "
        "was lost to the focus classes), the opposite of the change this study measures; this "
        "points to classification noise rather than real change. Check both maps before using "
        "the figure."
    ]
