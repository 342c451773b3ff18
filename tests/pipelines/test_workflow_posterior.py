"""``change: {rule: posterior}`` in a workflow: predict writes probabilities, the report and
``summary.json`` give the posterior figure beside the map-difference one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from geoseg.errors import ConfigError
from geoseg.pipelines.workflow import load_workflow, run_workflow
from tests.conftest import sample_run_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_run_folder(tmp_path_factory.mktemp("run"))


def test_deforestation_workflow_shows_both_figures(root: Path) -> None:
    wf = load_workflow(root / "workflows" / "deforestation.yaml", root)
    assert wf.change["rule"] == "posterior"  # the shipped file switches it on
    result = run_workflow(wf)
    s = result.summary
    probs = [m.with_name(f"{m.stem}_probs.tif") for m in result.maps]
    assert all(p.is_file() for p in probs) and set(probs) <= set(result.report)
    assert s["rule"] == "posterior" and s["uncertain"]["area_ha"] > 0
    plain = dataclasses.replace(
        wf, output=root / "plain", change={**wf.change, "rule": "map"}
    )  # the same workflow by map differencing
    versus = run_workflow(plain).summary
    assert "map_difference" not in versus and versus["rule"] == "map"
    assert s["map_difference"]["area_m2"] == pytest.approx(versus["area_m2"], rel=1e-12)
    assert s["area_m2"] < versus["area_m2"]
    page = (wf.output / "report" / "index.html").read_text()
    ha = f"{versus['area_m2'] / 1e4:,.2f} ha"
    assert f"{ha} by map differencing of the same maps" in page
    assert f"{s['area_m2'] / 1e4:,.2f} ha by the posterior rule" in page
    saved = json.loads((wf.output / "summary.json").read_text())
    assert saved["map_difference"]["area_ha"] == pytest.approx(versus["area_ha"])


@pytest.mark.parametrize(
    "change, words",
    [
        ("{rule: bayes}", "change.rule: expected one of map, posterior"),
        ("{rule: posterior, min_change_prob: 0.3}", "change.min_change_prob: expected a number"),
        ("{min_change_prob: true}", "expected a number in 0.5-1"),
    ],
)
def test_bad_rule_keys_are_refused(tmp_path: Path, change: str, words: str) -> None:
    for name in ("a.tif", "b.tif"):
        (tmp_path / name).touch()
    (tmp_path / "wf.yaml").write_text(
        f"scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\nchange: {change}\n"
    )
    with pytest.raises(ConfigError, match=words):
        load_workflow(tmp_path / "wf.yaml", tmp_path)


def test_geoseg_run_prints_every_figure_of_the_summary(root: Path) -> None:
    """``geoseg run`` with the posterior rule: the posterior, map-difference and
    uncertain areas, as ``summary.json`` gives them, not the posterior figure alone."""
    from click.testing import CliRunner

    from geoseg.cli import cli

    flow = root / "workflows" / "deforestation.yaml"
    res = CliRunner().invoke(cli, ["run", str(flow), "--root", str(root), "--overwrite"])
    assert res.exit_code == 0, res.output
    s = json.loads((root / "workflow_out" / "deforestation" / "summary.json").read_text())
    (line,) = [x for x in res.output.splitlines() if x.startswith("deforestation: ")]
    diff, unsure = s["map_difference"], s["uncertain"]
    assert line == (
        f"deforestation: {s['area_ha']:,.2f} ha ({s['area_acres']:,.2f} acres) by the "
        f"posterior rule; map differencing {diff['area_ha']:,.2f} ha "
        f"({diff['area_acres']:,.2f} acres); uncertain {unsure['area_ha']:,.2f} ha "
        f"({unsure['area_acres']:,.2f} acres, all classes: neither change nor no change)"
    )
    assert diff["area_ha"] > s["area_ha"] > 0 and unsure["area_ha"] > 0
