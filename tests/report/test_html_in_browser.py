"""The change report opens in a real headless browser with its tables and images."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.pipelines.change import ChangeOptions, change_report
from tests.change.helpers import random_labels, write_labels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _chromium(tmp: Path, *args: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_tables_and_images(tmp_path: Path) -> None:
    maps = [
        write_labels(tmp_path / "2019.tif", random_labels((120, 90), 0), date="2019-06-01"),
        write_labels(tmp_path / "2023.tif", random_labels((120, 90), 1), date="2023-06-01"),
    ]
    out = tmp_path / "report"
    change_report(maps, out)
    page = (out / "index.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", page)
    assert "<table" in dom and "2019-06-01" in dom
    sources = re.findall(r'<img[^>]+src="([^"]+)"', dom)
    assert sources, "the report shows no images"
    for src in sources:  # every image the page refers to exists and decodes
        with Image.open(out / src) as im:
            im.verify()
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", page)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    colourful = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 40
    assert colourful.mean() > 0.01, "the screenshot shows no coloured map images"


@dataclass(frozen=True)
class _Focus:
    name: str
    from_classes: tuple[str, ...]
    to_classes: tuple[str, ...]


def _section(dom: str, ident: str) -> str:
    """Visible text of the element with ``id=ident`` (tags dropped, spaces collapsed)."""
    match = re.search(rf'id="{ident}"[^>]*>(.*?)</(section|ul)>', dom, re.S)
    assert match, f"the page has no #{ident}"
    return _text(match.group(1))


def _text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def _focus_maps(tmp_path: Path) -> list[Path]:
    """Forest (top) and water (bottom); then 30 x 30 px forest -> urban, a 2 px
    forest -> urban speck (under the MMU) and half the water -> forest (implausible)."""
    before = np.full((120, 90), 1, np.uint8)
    before[60:] = 4
    before[-1] = 255
    after = before.copy()
    after[:30, :30] = 9
    after[50, 80:82] = 9
    after[60:90] = 1
    return [
        write_labels(tmp_path / "2019.tif", before, date="2019-06-01"),
        write_labels(tmp_path / "2020.tif", after, date="2020-06-01"),
    ]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_shows_what_an_analyst_reads_first(tmp_path: Path) -> None:
    out = tmp_path / "report"
    focus = _Focus("deforestation", ("forest",), ("water", "urban"))
    m = change_report(_focus_maps(tmp_path), out, ChangeOptions(mmu_ha=0.05), focus=focus).matrix
    assert m.pixels[0, 2] == 900  # the speck fell under the MMU
    page = (out / "index.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", page)
    body = _text(dom.split("<body>", 1)[1])
    # the focus figure comes first, rounded to 10 m pixels (0.01 ha), with the sample advice
    assert body.startswith(
        "Land-cover change report deforestation 9.01 ha forest → water, urban: map area"
    )
    headline = _section(dom, "headline")
    assert "map areas, not error-adjusted; collect samples with --samples-se" in headline.lower()
    # implausible: half the water became forest in a year; forest grew on net
    assert re.search(r"water → forest: 27\.0\d ha is 51 % of the first date's water", body)
    assert "deforestation: forest grew by 18.0" in body
    grid = _section(dom, "grid")
    assert "CRS: WGS 84 / UTM zone 33N (EPSG:32633)" in grid and "PROJCS" not in dom
    assert "x 500,000.00 to 500,900.00, y 5,098,800.00 to 5,100,000.00 (metre)" in grid
    assert "longitude 15.00000° to 15.01" in grid
    filters = _section(dom, "filters")
    assert "minimum mapping unit: 0.05 ha" in filters and "temporal consistency: off" in filters
    files = _section(dom, "files").split()
    assert {"change.gpkg", "change.tif", "transitions.csv", "before.png"} <= set(files)
    assert all((out / f).is_file() for f in files)
    legends = [_text(x) for x in re.findall(r'<ul class="legend">(.*?)</ul>', dom, re.S)]
    assert legends == [
        "forest water",
        "forest water urban",
        "unchanged changed to forest changed to urban",
    ]
    scales = [_text(x) for x in re.findall(r'<div class="scale">(.*?)</div>', dom, re.S)]
    assert scales == ["200 m"] * 3  # 900 m wide maps shown 300 px wide
    # no area in hectares with more decimals than a 10 m pixel supports
    assert not re.search(r"\d\.\d{3,} ha", body)
    ha = re.findall(r'<tr><td>[^<]+</td><td>[^<]+</td><td class="n">([^<]+)</td>', dom)
    assert ha == ["45.04", "9.01", "27.02", "26.12"]  # forest->forest, ->urban, water->...
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", page)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    warning_fill = np.all(np.abs(pixels - (255, 243, 205)) <= 2, axis=2)
    rows = np.flatnonzero(warning_fill.any(axis=1))
    assert rows.size and rows[0] < 400, "the implausibility warning is not near the top"
    swatch = np.all(pixels == (0, 120, 0), axis=2)  # the forest legend swatch and map pixels
    assert swatch.sum() > 100
