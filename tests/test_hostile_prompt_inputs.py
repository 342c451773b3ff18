"""``geoseg prompt`` inputs whose message must name the true cause and a fix the command has:
negative-only point prompts, ``--point``'s own CRS, boxes mostly off the scene, and an
unknown vector extension.

The scene (:func:`tests.test_hostile_prompts.scene`) is 320 x 300 px of 10 m, its columns
>= 160 nodata; ``point(col, row)`` is a scene pixel in its CRS (EPSG:32633).
"""

from __future__ import annotations

from pathlib import Path

import pyproj
import pytest
import shapely

from tests.cli_cases import CliCase, run_cli_case
from tests.models.sam_folders import imported_sam
from tests.test_hostile_prompts import IN, T, layer, point, scene

#: ``--point`` of pixel (60, 60) in lon/lat.
LON, LAT = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(
    *(T @ (60, 60))
)
NEGATIVE_ONLY = (
    "prompt with only negative points (label 0): a prompt needs at least one positive point"
)


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> str:
    return imported_sam(tmp_path_factory.mktemp("sam"))


def prompt(tmp: Path, sam: str, *args: object, vector: str = "o.gpkg") -> list[str]:
    line = ["prompt", scene(tmp), "-m", sam, *args, "-o", tmp / "o.tif", "--vector",
            tmp / vector, "--device", "cpu"]  # fmt: skip
    return [str(a) for a in line]


def box_px(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    """A box of scene px columns ``c0-c1``, rows ``r0-r1``."""
    return shapely.box(*(T @ (c0, r1)), *(T @ (c1, r0)))


#: case -> (its command line from (folder, model), the case).
CASES: dict[str, CliCase] = {
    # a lone negative point (on data) is no nodata prompt
    "lone-negative-point": CliCase(
        lambda t: ["--points", layer(t, [point(60, 60), point(70, 70)], label=[1, 0])], 0,
        ("skipped 1 " + NEGATIVE_ONLY, "(1 objects from 1 windows)"), ("on nodata",),
    ),
    "only-negative-points": CliCase(
        lambda t: ["--points", layer(t, [point(60, 60), point(70, 70)], label=[0, 0],
                                     prompt_id=[1, 2])],
        2, ("no prompt is left to segment (2 " + NEGATIVE_ONLY.replace("prompt ", "prompts ", 1),),
        ("on nodata", "CRS"), ("o.tif", "o.gpkg"),
    ),
    "negative-and-nodata-counted-apart": CliCase(
        lambda t: ["--points", layer(t, [point(60, 60), point(200, 60), point(70, 70)],
                                     label=[1, 1, 0], prompt_id=[1, 2, 3])],
        0, ("1 prompt on nodata, 1 " + NEGATIVE_ONLY,), (),
    ),
    "point-takes-its-crs-in-its-text": CliCase(
        lambda t: ["--point", f"{LON!r},{LAT!r}", "--prompts-crs", "EPSG:4326"], 2,
        (f"write --point X,Y,CRS (here --point {LON!r},{LAT!r},EPSG:4326) and drop "
         "--prompts-crs",), (), ("o.tif", "o.gpkg"),
    ),
    "point-with-its-crs": CliCase(
        lambda t: ["--point", f"{LON!r},{LAT!r},EPSG:4326"], 0, ("(1 objects from 1 windows)",),
    ),
    "point-outside-names-the-point-crs": CliCase(
        lambda t: ["--point", "0,0"], 2,
        ("1 prompt outside", "give their CRS as --point X,Y,EPSG:XXXX"), ("--prompts-crs",),
    ),
    "box-mostly-outside-is-named": CliCase(
        # feature 2: 20 x 20 px, 2 x 20 inside (90 % outside); feature 3: 40 % outside
        lambda t: ["--boxes", layer(t, [IN, box_px(-18, 10, 2, 30), box_px(100, 290, 110, 310)])],
        0, ("the box of feature 2 lies mostly (over 50 %) outside", "(3 objects"),
        ("feature 3", "features"),
    ),
    "boxes-mostly-outside-are-named": CliCase(
        lambda t: ["--boxes", layer(t, [box_px(-18, 10, 2, 30), IN, box_px(312, 5, 332, 15)])],
        0, ("the boxes of features 1, 3 lie mostly (over 50 %) outside",),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_prompt_inputs(
    case: str, sam: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    given = CASES[case]
    built = CliCase(lambda t: prompt(t, sam, *given.build(t)), given.exit_code, given.says,
                    given.never, given.absent)  # fmt: skip
    run_cli_case(built, tmp_path, caplog)


@pytest.mark.parametrize(
    ("command", "says", "never"),
    [("prompt", "(.gpkg, .shp, .parquet, .fgb, .geojson)", "--format"),
     ("vectorize", "(.gpkg, .shp, .parquet, .fgb, .geojson) or pass --format", "")],
)  # fmt: skip
def test_an_unknown_vector_extension_offers_only_options_the_command_has(
    command: str, says: str, never: str, sam: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def build(t: Path) -> list[str]:
        if command == "prompt":
            return prompt(t, sam, "--point", "500600,5098600", vector="o.csv")
        return ["vectorize", str(scene(t)), "-o", str(t / "o.csv")]

    never = (never,) if never else ()
    run_cli_case(CliCase(build, 2, ("o.csv: unknown vector format '.csv'", says), never,
                         ("o.csv", "o.tif")), tmp_path, caplog)  # fmt: skip
