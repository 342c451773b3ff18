"""``geoseg prompt``'s outputs on a small scene are those of the code before its speed-ups
(byte-identical instance COG, identical polygons and fields): digests pinned from a run of
that code.

The file's bytes depend on GDAL's DEFLATE, so they are pinned for the GDAL that made them;
the pixels, mask, tags and polygons are pinned for any.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.pipelines.prompt import PromptOptions, prompt_scene
from tests.conftest import textured_scene, write_raster
from tests.pipelines.test_prompt import H, T, W, box_layer

#: Boxes (scene px ``col0, row0, col1, row1``): overlapping pairs, one on the scene's edge
#: (a boundless window), one larger than a window (read decimated).
BOXES = [
    (20, 30, 60, 80), (40, 50, 110, 120), (420, 40, 470, 90), (300, 450, 350, 500),
    (650, 560, 700, 600), (100, 150, 520, 540), (200, 200, 230, 260),
]  # fmt: skip
#: GDAL whose COG bytes :data:`FILE_SHA256` pins.
GDAL = "3.10.3"
#: ``--interior-points`` -> (COG bytes, COG content, polygons but their ``score``) digests
#: of the code of commit 84cd6d8 (the polygons' digest taken again without ``score`` from
#: code whose outputs equalled it).
PINNED = {
    0: ("0cc9bd659b197649956d4e2ce6d804f81042b6d4ca8e02044a57fa3a26254d73",
        "aef2b87bd00436478bcbf44d5a23484afa144fe453f58b35d0d78f7bca9bc7df",
        "cae75c5b05340205a8215621a646a17d8977252d092c526f0505c0f5981a8a11"),
    2: ("cb20fe9fdb11b16d50a5d7d257cbe7456065702a9d3bc09422d00862dba670d2",
        "1ec5833d4f75e8a274a928270f36b3f2d20490dc5c8474957c1b8fefc83c7165",
        "a8922151f9d27308384825ac97432b7facd20235b5bd6e85abbccb14b74930d6"),
}  # fmt: skip
#: ``--interior-points`` -> the polygons' ``score`` (SAM's predicted IoU), in order.
SCORES = {
    0: [0.00054943660506978631, 0.00066985911689698696, 0.00053742784075438976,
        -9.7339754574932158e-05, 0.00035833392757922411, 0.00081297231372445822,
        0.00010436214506626129],
    2: [0.00054743781220167875, 0.00071574375033378601, 0.0011593119706958532,
        0.00043510834802873433, 0.00075521488906815648, 0.00067067163763567805,
        0.00042743040830828249],
}  # fmt: skip


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _content(path: Path) -> str:
    """Pixels, mask, overviews and tags of the instance COG."""
    with rasterio.open(path) as src:
        parts = [np.ascontiguousarray(src.read()).tobytes(), src.dataset_mask().tobytes()]
        for factor in src.overviews(1):
            shape = (src.count, -(-H // factor), -(-W // factor))
            parts.append(src.read(out_shape=shape).tobytes())
        parts.append(repr(sorted(src.tags().items())).encode())
        parts.append(repr((src.profile["blockxsize"], src.descriptions)).encode())
    return _digest(*parts)


def _vectors(path: Path) -> str:
    """Every field but ``score`` and every geometry (WKB) of the polygons, in order."""
    table = gpd.read_file(path)
    fields = table.drop(columns=["geometry", "score"])
    return _digest(fields.to_csv(index=False, float_format="%.17g").encode(),
                   *(shapely.to_wkb(g) for g in table.geometry))  # fmt: skip


@pytest.mark.parametrize("interior", [0, 2])
def test_outputs_are_those_of_the_code_before_the_speed_ups(
    sam: str, tmp_path: Path, interior: int
) -> None:
    data = (textured_scene(H, W, 3) // 16).astype(np.uint8)
    scene = write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))
    layer = box_layer(tmp_path / "b.gpkg", BOXES)
    opts = PromptOptions(boxes=str(layer), device="cpu", batch_size=2, interior_points=interior)
    result = prompt_scene(scene, sam, tmp_path / "o.tif", opts, tmp_path / "o.gpkg")
    file_sha, content_sha, vector_sha = PINNED[interior]
    assert result.objects == len(BOXES)
    assert _content(tmp_path / "o.tif") == content_sha
    assert _vectors(tmp_path / "o.gpkg") == vector_sha
    # SAM's predicted IoU: its low bits follow torch's thread count (reduction order)
    got = gpd.read_file(tmp_path / "o.gpkg")["score"].to_numpy()
    np.testing.assert_allclose(got, SCORES[interior], rtol=0, atol=1e-8)
    if rasterio.__gdal_version__ == GDAL:
        assert hashlib.sha256((tmp_path / "o.tif").read_bytes()).hexdigest() == file_sha
