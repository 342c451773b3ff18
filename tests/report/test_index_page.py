"""index.html's headline: focus figure, error-adjusted with a reference sample, or the
largest transitions; a misspelled focus class is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import GeosegError
from geoseg.io.vectors import read_vectors, write_vectors
from geoseg.pipelines.change import ChangeOptions, change_report
from tests.report.test_html_in_browser import _Focus, _focus_maps, _section

FOCUS = _Focus("deforestation", ("forest",), ("water", "urban"))


def test_reference_sample_gives_the_focus_figure_a_confidence_interval(tmp_path: Path) -> None:
    maps = _focus_maps(tmp_path)
    change_report(maps, tmp_path / "r", ChangeOptions(samples_se=0.05, mmu_ha=0.05), focus=FOCUS)
    first = _section((tmp_path / "r" / "index.html").read_text(), "headline")
    assert "Label the points of samples.gpkg" in first and "deforestation 9.01 ha" in first
    samples = read_vectors(tmp_path / "r" / "samples.gpkg")
    samples["reference"] = samples["stratum_name"]
    # one forest -> urban sample is really unchanged forest: the figure shrinks, with a CI
    wrong = samples.index[samples["stratum_name"] == "forest -> urban"][0]
    samples.loc[wrong, "reference"] = "forest -> forest"
    write_vectors(samples, tmp_path / "labelled.gpkg")
    opts = ChangeOptions(reference=str(tmp_path / "labelled.gpkg"), mmu_ha=0.05)
    change_report(maps, tmp_path / "r2", opts, focus=FOCUS)
    headline = _section((tmp_path / "r2" / "index.html").read_text(), "headline")
    n = int((samples["stratum_name"] == "forest -> urban").sum())
    adjusted = 9.01 * (n - 1) / n
    value = headline.split("deforestation ", 1)[1].split(" ha", 1)[0]
    mid, ci = (float(v) for v in value.split(" ± "))
    assert mid == pytest.approx(adjusted, abs=0.011) and 0 < ci < 1
    assert "error-adjusted, ± 95 % confidence interval; map area 9.01 ha" in headline
    assert f"from {len(samples):,} labelled reference samples" in headline


def test_without_focus_the_largest_transitions_head_the_page(tmp_path: Path) -> None:
    change_report(_focus_maps(tmp_path), tmp_path / "r", ChangeOptions(mmu_ha=0.05))
    headline = _section((tmp_path / "r" / "index.html").read_text(), "headline")
    assert headline.startswith(
        "Largest changes water → forest 27.02 ha map area; 66.77 acres, 2,700 pixels "
        "forest → urban 9.01 ha"
    )
    assert "collect samples with --samples-se" in headline


def test_a_misspelled_focus_class_writes_nothing(tmp_path: Path) -> None:
    wrong = _Focus("deforestation", ("forests",), ("urban",))
    with pytest.raises(GeosegError, match=r"\['forests'\]"):
        change_report(_focus_maps(tmp_path), tmp_path / "r", focus=wrong)
    assert not (tmp_path / "r").exists()
