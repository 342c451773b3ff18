"""The report's headline (focus figure, error-adjusted) and its implausibility warnings."""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from geoseg.change.accuracy import stratified_estimate
from geoseg.change.matrix import TransitionMatrix
from geoseg.errors import GeosegError
from geoseg.report.checks import (
    CANCEL_RATIO,
    NEXT_BEYOND_POSTERIOR,
    NEXT_POSTERIOR,
    change_warnings,
    implausible_change,
    years_between,
)
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
    warnings = change_warnings(m, 1.0, DEFOREST, _text)
    assert [(w.rule, w.classes) for w in warnings] == [
        ("cancelling_flows", ("forest", "grassland")),  # 399.84 vs 766.43 ha: 52 %
        ("cancelling_flows", ("forest", "water")),  # 18.37 vs 21.23 ha: 87 %
        ("focus_direction", ("forest",)),
    ]
    assert warnings[-1].text == (
        "deforestation: forest grew by 369.45 ha on net (787.66 ha became forest, 418.21 ha "
        "was lost to the focus classes), the opposite of the change this study measures; this "
        "points to classification noise rather than real change. Check both maps before using "
        "the figure. Next step: draw reference samples with `geoseg change --samples-se 0.01`, "
        "label them and rerun with `--reference samples.gpkg` for error-adjusted areas with "
        "95 % confidence intervals."
    )


@pytest.mark.parametrize(
    ("pixels", "flagged"),
    [
        ([[5000, 100, 0], [50, 5000, 0], [0, 0, 2000]], True),  # 50 / 100 = 0.5: the limit
        ([[5000, 101, 0], [50, 5000, 0], [0, 0, 2000]], False),  # 50 / 101 = 0.495
        ([[5000, 98, 0], [49, 5000, 0], [0, 0, 2000]], False),  # 0.5, but 49 px < MIN_PIXELS
    ],
)
def test_cancelling_flows_at_the_boundary(pixels: list[list[int]], flagged: bool) -> None:
    warnings = change_warnings(_matrix(pixels), 1.0, None, _text)
    assert [w.rule for w in warnings] == (["cancelling_flows"] if flagged else [])
    if flagged:
        (w,) = warnings
        assert w.classes == ("forest", "grassland")
        assert dict(w.figures) == {
            "forward_m2": 10_000.0, "backward_m2": 5_000.0, "forward_pixels": 100,
            "backward_pixels": 50, "ratio": 0.5, "limit": CANCEL_RATIO,
        }  # fmt: skip
        assert w.message.startswith(
            "forest -> grassland (1.00 ha) and grassland -> forest (0.50 ha) nearly cancel out "
            "(the smaller is 50 % of the larger, net 0.50 ha)"
        )
        assert "`geoseg predict --probabilities`" in w.next_step
        assert "`geoseg change --rule posterior`" in w.next_step and "--consistency" in w.next_step


@pytest.mark.parametrize(
    ("pixels", "years", "expected"),
    [
        # grassland 5000 px loses 1001 (to forest 500, water 501): 20.02 % > 20 % in a year
        ([[9000, 0, 0], [500, 3999, 501], [0, 0, 4000]], 1.0, [("grassland", -1001, -0.2002)]),
        ([[9000, 0, 0], [500, 4000, 500], [0, 0, 4000]], 1.0, []),  # exactly 20 %: plausible
        # over two years up to 1 - 0.8 ** 2 = 36 % may go
        ([[9000, 0, 0], [500, 3999, 501], [0, 0, 4000]], 2.0, []),
        # forest 4000 px gains 1001 (grassland 500, water 501): 25.025 % > 0.8 ** -1 - 1 = 25 %
        ([[4000, 0, 0], [500, 4500, 0], [501, 0, 4499]], 1.0, [("forest", 1001, 0.25025)]),
        ([[4000, 0, 0], [500, 4500, 0], [500, 0, 4500]], 1.0, []),  # exactly 25 %
        # water, absent on the first date, appears on 60 px (two transitions of 30 px)
        ([[5000, 0, 30], [0, 5000, 30], [0, 0, 0]], 1.0, [("water", 60, None)]),
        ([[5000, 0, 30], [0, 5000, 19], [0, 0, 0]], 1.0, []),  # 49 px < MIN_PIXELS
    ],
)
def test_net_change_of_a_class(
    pixels: list[list[int]], years: float, expected: list[tuple[str, int, float | None]]
) -> None:
    warnings = change_warnings(_matrix(pixels), years, None, _text)
    found = [(w.classes[0], w.figures["net_pixels"], w.figures["share"]) for w in warnings]
    assert [w.rule for w in warnings] == ["net_change"] * len(expected)
    assert found == [(c, n, s if s is None else pytest.approx(s)) for c, n, s in expected]
    for w in warnings:
        assert w.figures["net_m2"] == 100.0 * w.figures["net_pixels"]
        assert "`geoseg change --samples-se 0.01`" in w.next_step and "--reference" in w.next_step


def test_net_change_sentences() -> None:
    loss = change_warnings(_matrix([[9000, 0, 0], [500, 3999, 501], [0, 0, 4000]]), 1.0, None,
                           _text)[0]  # fmt: skip
    assert loss.message.startswith(
        "grassland lost 10.01 ha on net, 20 % of its first-date area in 1.0 years (more than "
        "the 20 % this report takes as plausible)"
    )
    new = change_warnings(_matrix([[5000, 0, 30], [0, 5000, 30], [0, 0, 0]]), 1.0, None, _text)
    assert new[0].message.startswith("water: 0.60 ha appeared where the first date maps none")


def test_a_transition_share_warning_recommends_the_posterior_rule() -> None:
    m = _matrix([[9000, 500, 10], [1400, 5000, 0], [0, 0, 2000]])
    (w,) = change_warnings(m, 1.0, None, _text)
    assert (w.rule, w.classes, w.next_step) == (
        "transition_share",
        ("grassland", "forest"),
        NEXT_POSTERIOR,
    )
    assert w.figures == {"area_m2": 140_000.0, "pixels": 1400, "share": 1400 / 6400,
                         "limit": pytest.approx(0.2)}  # fmt: skip
    assert w.text == f"{w.message} Next step: {NEXT_POSTERIOR}"


def test_transitions_json_and_report_carry_the_warnings(tmp_path: Path) -> None:
    """Forest and water trade 900 and 700 px both ways: cancelling flows (ratio 0.78)."""
    from geoseg.pipelines.change import change_report
    from tests.change.helpers import write_labels

    before = np.full((100, 100), 1, np.uint8)
    before[50:] = 4
    after = before.copy()
    after[:9] = 4  # 900 px forest -> water, 18 % of forest
    after[50:57] = 1  # 700 px water -> forest
    maps = [write_labels(tmp_path / f"{i}.tif", a, date=f"202{i}-06-01")
            for i, a in enumerate((before, after))]  # fmt: skip
    change_report(maps, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "transitions.json").read_text())
    (w,) = doc["warnings"]
    assert w["rule"] == "cancelling_flows" and w["classes"] == ["forest", "water"]
    assert w["figures"]["forward_pixels"] == 900 and w["figures"]["backward_pixels"] == 700
    assert w["figures"]["ratio"] == pytest.approx(7 / 9)
    assert w["next_step"].startswith("write class probabilities with `geoseg predict")
    page = html.unescape((tmp_path / "out" / "index.html").read_text())
    assert "forest → water (9.01 ha) and water → forest (7.01 ha) nearly cancel out" in page
    assert "Next step: write class probabilities" in page


#: grassland -> forest is 22 % of grassland; forest <-> grassland 900 vs 1400 px (ratio 0.64)
NOISY = [[9000, 900, 10], [1400, 5000, 0], [0, 0, 2000]]


@pytest.mark.parametrize(
    ("uncertain_m2", "steps"),
    [(None, ["write class probabilities", "write class probabilities"]),
     (0.0, ["the posterior rule is already on"] * 2),  # posterior, nothing left uncertain
     (3_000.0, ["the posterior rule is already on"] * 2)],
)  # fmt: skip
def test_the_next_step_against_noise_depends_on_the_rule_used(
    uncertain_m2: float | None, steps: list[str]
) -> None:
    m = dataclasses.replace(_matrix(NOISY), uncertain_area_m2=uncertain_m2)
    warnings = change_warnings(m, 1.0, None, _text)
    assert [w.rule for w in warnings] == ["transition_share", "cancelling_flows"]
    assert [w.next_step[: len(s)] for w, s in zip(warnings, steps, strict=True)] == steps
    if uncertain_m2 is not None:  # recommending the rule the run used is no step at all
        assert all(w.next_step == NEXT_BEYOND_POSTERIOR for w in warnings)
        assert "--rule posterior" not in " ".join(w.text for w in warnings)
        assert "--consistency 2" in NEXT_BEYOND_POSTERIOR
        assert (
            "--min-change-prob" in NEXT_BEYOND_POSTERIOR and "--reference" in NEXT_BEYOND_POSTERIOR
        )


def test_a_posterior_report_does_not_recommend_the_posterior_rule(tmp_path: Path) -> None:
    """The cancelling flows above with confident probabilities: the posterior rule keeps
    them (P(change) = 0.97), and its report's next step is what is left to do."""
    from geoseg.pipelines.change import ChangeOptions, change_report
    from tests.change.helpers import SCHEMA, write_labels, write_probabilities

    before = np.full((100, 100), 1, np.uint8)
    before[50:] = 4
    after = before.copy()
    after[:9] = 4
    after[50:57] = 1
    maps = []
    for i, labels in enumerate((before, after)):
        path = write_labels(tmp_path / f"{i}.tif", labels, date=f"202{i}-06-01")
        probs = np.full((3, 100, 100), 0.01)
        for k, class_id in enumerate(SCHEMA.ids):
            probs[k][labels == class_id] = 0.98
        write_probabilities(path, probs)
        maps.append(path)
    change_report(maps, tmp_path / "out", ChangeOptions(rule="posterior"))
    doc = json.loads((tmp_path / "out" / "transitions.json").read_text())
    (w,) = doc["warnings"]
    assert w["rule"] == "cancelling_flows" and w["figures"]["forward_pixels"] == 900
    assert w["next_step"] == NEXT_BEYOND_POSTERIOR
    page = html.unescape((tmp_path / "out" / "index.html").read_text())
    assert "Next step: the posterior rule is already on" in page
    assert "--rule posterior`" not in page


@pytest.mark.parametrize(
    ("uncertain_m2", "start", "absent"),
    [(None, "the change already persists over the last 3 dates (`--consistency 3` is on)",
      ("add dates",)),
     (0.0, "the posterior rule and `--consistency 3` are already on", ("add dates", "--rule"))],
)  # fmt: skip
def test_the_next_step_leaves_out_consistency_when_it_is_on(
    uncertain_m2: float | None, start: str, absent: tuple[str, ...]
) -> None:
    m = dataclasses.replace(_matrix(NOISY), uncertain_area_m2=uncertain_m2)
    warnings = change_warnings(m, 1.0, None, _text, consistency=3)
    assert [w.rule for w in warnings] == ["transition_share", "cancelling_flows"]
    for w in warnings:
        assert w.next_step.startswith(start)
        assert not any(a in w.next_step for a in absent)
        assert "--reference samples.gpkg" in w.next_step
