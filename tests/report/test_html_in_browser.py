"""The change report opens in a real headless browser with its tables and images."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.pipelines.change import change_report
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
