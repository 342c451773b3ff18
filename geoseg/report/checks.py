"""Warnings for implausible change: results that point to classification noise.

Four rules, none tuned to one scene. Each warning names the recommended next step
and is given as a sentence (HTML report) and as an object (``warnings`` of
``transitions.json`` and of a workflow's ``summary.json``).

1. **Transition share.** A transition ``a -> b`` (``a != b``) of at least
   :data:`MIN_PIXELS` pixels that covers more than :data:`MAX_YEARLY_SHARE`
   (20 %) of class ``a``'s first-date area per year, compounded over the years
   between the dates (``1 - 0.8 ** years``; one interval when a ``DATE`` tag is
   missing or the dates are under a year apart). Real land-cover change rarely
   turns a fifth of a class into another in a year; two maps of different
   seasons or a model misclassifying one date do.
2. **Cancelling flows.** ``a -> b`` and ``b -> a`` both of at least
   :data:`MIN_PIXELS` pixels, the smaller at least :data:`CANCEL_RATIO` (0.5) of
   the larger. On land that did not change, a classifier whose errors are
   independent between dates confuses ``a`` with ``b`` on the first date as often
   as on the last, so noise moves as much area each way (ratio near 1), while
   real change (clearing, building, flooding) runs mostly one way (ratio near 0).
   At 0.5 the gross exchange is three times the net (``(1 + r) / (1 - r)``): at
   least two thirds of the mapped change between the two classes cancels out.
3. **Net change.** A class whose area changes on net (last date minus first) by
   at least :data:`MIN_PIXELS` pixels and by more than :data:`MAX_YEARLY_SHARE`
   of its first-date area per year: a loss over ``1 - 0.8 ** years``, a gain over
   ``0.8 ** -years - 1`` (25 % in a year; the same factor both ways, so a loss
   and its reversal are judged alike), or any gain of a class the first date does
   not have. Rule 1 looks at one transition; this catches losses spread over many
   classes, and gains.
4. **Focus direction.** A study's focus (e.g. deforestation: forest -> other
   classes) measures a loss of its from-classes. When the reverse transitions
   (to-classes -> from-classes) exceed the focus transitions, the from-classes
   grew on net, the opposite of what the study measures: confusion between the
   classes, rather than change, is the likelier cause.

The next step of rules 1 and 2 depends on the rule that counted the change: after
map differencing, the posterior rule (:data:`NEXT_POSTERIOR`); when the posterior
rule already counted it (the matrix has an uncertain area), what is left
(:data:`NEXT_BEYOND_POSTERIOR`): more dates, a higher threshold, or reference samples.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg.change.matrix import TransitionMatrix
from geoseg.report.focus import FocusLike, focus_cells

__all__ = [
    "CANCEL_RATIO",
    "MAX_YEARLY_SHARE",
    "MIN_PIXELS",
    "NEXT_BEYOND_POSTERIOR",
    "NEXT_CONSISTENCY",
    "NEXT_POSTERIOR",
    "NEXT_REFERENCE",
    "ChangeWarning",
    "change_warnings",
    "implausible_change",
    "years_between",
]

#: Largest plausible share of a class that turns into one other class in a year.
MAX_YEARLY_SHARE = 0.2
#: Transitions smaller than this many pixels are never flagged (too few to judge).
MIN_PIXELS = 50
#: Smaller / larger of two opposite flows at and above which they count as noise.
CANCEL_RATIO = 0.5

#: Next step: count only transitions the two dates' class probabilities support.
NEXT_POSTERIOR = (
    "write class probabilities with `geoseg predict --probabilities` for each date and count "
    "only confident transitions with `geoseg change --rule posterior`."
)
#: Next step: more dates, and only change that persists.
NEXT_CONSISTENCY = (
    "add dates and keep only change that persists (`geoseg change --consistency 2` with three "
    "or more maps)."
)
#: Next step: a labelled reference sample for error-adjusted areas.
NEXT_REFERENCE = (
    "draw reference samples with `geoseg change --samples-se 0.01`, label them and rerun with "
    "`--reference samples.gpkg` for error-adjusted areas with 95 % confidence intervals."
)

#: Next step against noise when the posterior rule already counted the change: the
#: change left is what the model is confident about, so only more evidence removes it.
NEXT_BEYOND_POSTERIOR = (
    "the posterior rule is already on, so this is change the model is confident about: add "
    "dates and keep only change that persists (`geoseg change --consistency 2` with three or "
    "more maps), raise `--min-change-prob` (e.g. 0.8; more area is then left uncertain), or "
    "draw reference samples with `--samples-se 0.01`, label them and rerun with `--reference "
    "samples.gpkg` for error-adjusted areas with 95 % confidence intervals."
)

#: Next step against noise: probabilities, or more dates.
_NEXT_NOISE = f"{NEXT_POSTERIOR[:-1]}; or {NEXT_CONSISTENCY}"


#: Next step against noise when ``--consistency`` is already on (map differencing).
NEXT_BEYOND_CONSISTENCY = (
    "the change already persists over the last {n} dates (`--consistency {n}` is on): count "
    "only confident transitions with `geoseg predict --probabilities` for each date and "
    "`geoseg change --rule posterior`, or draw reference samples with `--samples-se 0.01`, "
    "label them and rerun with `--reference samples.gpkg` for error-adjusted areas."
)
#: Next step against noise when both the posterior rule and ``--consistency`` are on.
NEXT_BEYOND_BOTH = (
    "the posterior rule and `--consistency {n}` are already on, so this is change the "
    "model is confident about on every date: raise `--min-change-prob` (e.g. 0.8; more area "
    "is then left uncertain), or draw reference samples with `--samples-se 0.01`, label them "
    "and rerun with `--reference samples.gpkg` for error-adjusted areas with 95 % "
    "confidence intervals."
)


def _next_against_noise(m: TransitionMatrix, after_map_rule: str, consistency: int = 1) -> str:
    """The next step that is not already taken: ``after_map_rule`` (map differencing,
    one pair), :data:`NEXT_BEYOND_POSTERIOR` when the posterior rule counted ``m``
    (only it leaves an uncertain area, even a zero one), :data:`NEXT_BEYOND_CONSISTENCY`
    / :data:`NEXT_BEYOND_BOTH` when ``consistency`` > 1 filtered it too."""
    posterior = m.uncertain_area_m2 is not None
    if consistency > 1:
        return (NEXT_BEYOND_BOTH if posterior else NEXT_BEYOND_CONSISTENCY).format(n=consistency)
    return NEXT_BEYOND_POSTERIOR if posterior else after_map_rule


_DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class ChangeWarning:
    """One broken rule (see the module docstring).

    Attributes:
        rule: ``transition_share``, ``cancelling_flows``, ``net_change`` or ``focus_direction``.
        classes: the class names concerned (from-class first for transitions).
        figures: the numbers the rule judged (areas in m², shares 0-1, pixels).
        message: what was found, one or two sentences.
        next_step: what to do about it, one sentence.
    """

    rule: str
    classes: tuple[str, ...]
    figures: Mapping[str, float | int | None]
    message: str
    next_step: str

    @property
    def text(self) -> str:
        """The sentence of the HTML report: the finding, then the next step."""
        return f"{self.message} Next step: {self.next_step}"

    def to_json(self) -> dict[str, Any]:
        """The object of ``transitions.json`` / ``summary.json``."""
        return {
            "rule": self.rule, "classes": list(self.classes), "figures": dict(self.figures),
            "message": self.message, "next_step": self.next_step,
        }  # fmt: skip


def years_between(first: str | None, last: str | None) -> float | None:
    """Years between two ISO dates (``2019-06-01``, time part ignored), or None."""
    try:
        a = dt.date.fromisoformat(str(first)[:10])
        b = dt.date.fromisoformat(str(last)[:10])
    except ValueError:
        return None
    return abs((b - a).days) / _DAYS_PER_YEAR


def _share_limit(years: float | None) -> float:
    # rounded so that a limit of 20 % is 0.2, not 1 - 0.8 = 0.19999999999999996
    return round(1.0 - (1.0 - MAX_YEARLY_SHARE) ** max(1.0, years or 1.0), 12)


def _gain_limit(years: float | None) -> float:
    return round((1.0 - MAX_YEARLY_SHARE) ** -max(1.0, years or 1.0) - 1.0, 12)


def _span(years: float | None) -> str:
    return f"in {years:.1f} years" if years and years >= 1 else "between the two dates"


def implausible_change(
    m: TransitionMatrix,
    years: float | None,
    focus: FocusLike | None,
    area_text: Callable[[float], str],
) -> list[str]:
    """The sentences of :func:`change_warnings` (finding and next step), for the report."""
    return [w.text for w in change_warnings(m, years, focus, area_text)]


def change_warnings(
    m: TransitionMatrix,
    years: float | None,
    focus: FocusLike | None,
    area_text: Callable[[float], str],
    consistency: int = 1,
) -> list[ChangeWarning]:
    """Every rule broken (see the module docstring), by rule, largest areas first.

    Args:
        m: the first -> last date transition matrix (with an uncertain area when the
            posterior rule counted it: the next steps then say what is left to do).
        years: years between the first and last date, or None when unknown.
        focus: the study's focus, or None.
        area_text: formats an area in m² for the sentences (e.g. ``"418.54 ha"``).
        consistency: ``--consistency`` of the run (the next steps leave it out when on).
    """
    out = _transition_shares(m, years, area_text, consistency)
    out += _cancelling_flows(m, area_text, consistency)
    out += _net_changes(m, years, area_text)
    if focus is not None:
        out += _direction(m, focus, area_text)
    return out


def _transition_shares(
    m: TransitionMatrix, years: float | None, area_text: Callable[[float], str],
    consistency: int = 1,
) -> list[ChangeWarning]:  # fmt: skip
    limit, first, k = _share_limit(years), m.area_m2.sum(axis=1), len(m.names)
    out = []
    for i, j in itertools.permutations(range(k), 2):
        a = float(m.area_m2[i, j])
        if m.pixels[i, j] < MIN_PIXELS or a <= limit * first[i]:
            continue
        share = a / float(first[i])
        figures = {"area_m2": a, "pixels": int(m.pixels[i, j]), "share": share, "limit": limit}
        message = (
            f"{m.names[i]} -> {m.names[j]}: {area_text(a)} is {100 * share:.0f} % of the first "
            f"date's {m.names[i]} {_span(years)} (more than the {100 * limit:.0f} % this report "
            "takes as plausible); this points to classification noise, e.g. scenes of different "
            "seasons or a model that confuses the two classes."
        )
        pair = (m.names[i], m.names[j])
        step = _next_against_noise(m, NEXT_POSTERIOR, consistency)
        out.append(ChangeWarning("transition_share", pair, figures, message, step))
    return sorted(out, key=lambda w: -float(w.figures["area_m2"] or 0))


def _cancelling_flows(
    m: TransitionMatrix, area_text: Callable[[float], str], consistency: int = 1
) -> list[ChangeWarning]:
    out: list[tuple[float, ChangeWarning]] = []
    for i, j in itertools.combinations(range(len(m.names)), 2):
        ab, ba = float(m.area_m2[i, j]), float(m.area_m2[j, i])
        if min(m.pixels[i, j], m.pixels[j, i]) < MIN_PIXELS:
            continue
        ratio = min(ab, ba) / max(ab, ba)
        if ratio < CANCEL_RATIO:
            continue
        a, b = m.names[i], m.names[j]
        figures = {
            "forward_m2": ab, "backward_m2": ba, "forward_pixels": int(m.pixels[i, j]),
            "backward_pixels": int(m.pixels[j, i]), "ratio": ratio, "limit": CANCEL_RATIO,
        }  # fmt: skip
        message = (
            f"{a} -> {b} ({area_text(ab)}) and {b} -> {a} ({area_text(ba)}) nearly cancel out "
            f"(the smaller is {100 * ratio:.0f} % of the larger, net {area_text(abs(ab - ba))}): "
            "flows of similar size both ways are the signature of classification noise, not of "
            "change."
        )
        step = _next_against_noise(m, _NEXT_NOISE, consistency)
        found = ChangeWarning("cancelling_flows", (a, b), figures, message, step)
        out.append((ab + ba, found))
    return [w for _, w in sorted(out, key=lambda gw: -gw[0])]


def _net_changes(
    m: TransitionMatrix, years: float | None, area_text: Callable[[float], str]
) -> list[ChangeWarning]:
    first, last = m.area_m2.sum(axis=1), m.area_m2.sum(axis=0)
    net_px = m.pixels.sum(axis=0) - m.pixels.sum(axis=1)
    out = []
    for i, name in enumerate(m.names):
        net = float(last[i] - first[i])
        share = net / float(first[i]) if first[i] > 0 else None
        limit = _gain_limit(years) if net > 0 else _share_limit(years)
        if abs(net_px[i]) < MIN_PIXELS or (share is not None and abs(share) <= limit):
            continue
        figures = {"first_m2": float(first[i]), "last_m2": float(last[i]), "net_m2": net,
                   "net_pixels": int(net_px[i]), "share": share, "limit": limit}  # fmt: skip
        message = _net_text(name, net, share, limit, years, area_text)
        out.append(ChangeWarning("net_change", (name,), figures, message, NEXT_REFERENCE))
    return sorted(out, key=lambda w: -abs(float(w.figures["net_m2"] or 0)))


def _net_text(
    name: str, net: float, share: float | None, limit: float, years: float | None,
    area_text: Callable[[float], str],
) -> str:  # fmt: skip
    if share is None:
        return (
            f"{name}: {area_text(net)} appeared where the first date maps none; a class that "
            "appears from nothing is more often a model's confusion than new land cover."
        )
    verb = "gained" if net > 0 else "lost"
    return (
        f"{name} {verb} {area_text(abs(net))} on net, {100 * abs(share):.0f} % of its "
        f"first-date area {_span(years)} (more than the {100 * limit:.0f} % this report takes "
        "as plausible); a class rarely changes this fast, a map that confuses it does."
    )


def _direction(
    m: TransitionMatrix, focus: FocusLike, area_text: Callable[[float], str]
) -> list[ChangeWarning]:
    cells = focus_cells(focus, m.names)
    if not cells:
        return []
    forward = float(sum(m.area_m2[r, c] for r, c in cells))
    backward = float(sum(m.area_m2[c, r] for r, c in cells))
    if backward <= forward:
        return []
    sources = sorted({m.names[r] for r, _ in cells}, key=m.names.index)
    source = _join(sources)
    return [ChangeWarning(
        "focus_direction", tuple(sources),
        {"forward_m2": forward, "backward_m2": backward, "net_gain_m2": backward - forward},
        f"{focus.name}: {source} grew by {area_text(backward - forward)} on net "
        f"({area_text(backward)} became {source}, {area_text(forward)} was lost to the focus "
        f"classes), the opposite of the change this study measures; this points to "
        "classification noise rather than real change. Check both maps before using the figure.",
        NEXT_REFERENCE,
    )]  # fmt: skip


def _join(names: Sequence[str]) -> str:
    return ", ".join(names)
