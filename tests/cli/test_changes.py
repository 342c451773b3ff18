"""``geoseg change --probabilities-of``: several values after the option, or the option
repeated, anywhere on the command line (click's public ``Command.parse_args``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.cli.changes import change
from tests.change.helpers import labels_of, random_probabilities, write_labels, write_probabilities

M, P = ("m1", "m2"), ("p1", "p2")

#: command line -> (maps, probability files) as the command receives them
FORMS = {
    "after the maps": ("m1 m2 -o out --probabilities-of p1 p2", M, P),
    "before the maps, an option between": ("--probabilities-of p1 p2 -o out m1 m2", M, P),
    "before the maps, directly": ("--probabilities-of p1 p2 m1 m2 -o out", M, P),
    "before the maps, at the end": ("-o out --probabilities-of p1 p2 m1 m2", M, P),
    "repeated, then the maps": ("-o out --probabilities-of p1 --probabilities-of p2 m1 m2", M, P),
    "repeated, around the maps": ("--probabilities-of p1 m1 m2 --probabilities-of p2 -o o", M, P),
    "glued first value": ("m1 m2 --probabilities-of=p1 p2 -o out", M, P),
    "between other options": (
        "m1 m2 -o out --rule posterior --progress --probabilities-of p1 p2 --chunk 16", M, P),
    "ended by --": ("-o out --probabilities-of p1 p2 -- m1 m2", M, P),
    "three dates": ("--probabilities-of p1 p2 p3 m1 m2 m3 -o o", ("m1", "m2", "m3"),
                    ("p1", "p2", "p3")),
    "not given": ("m1 m2 -o out", M, ()),
}  # fmt: skip


@pytest.mark.parametrize("form", sorted(FORMS))
def test_probability_files_are_read_in_every_form(form: str) -> None:
    line, maps, probs = FORMS[form]
    params = change.make_context("change", line.split()).params
    assert (params["maps"], params["probabilities_of"]) == (maps, probs)


def test_the_option_without_a_value_is_refused() -> None:
    res = CliRunner().invoke(cli, ["change", "m1", "m2", "-o", "out", "--probabilities-of"])
    assert res.exit_code == 2 and "'--probabilities-of' requires an argument" in res.output


def test_probabilities_before_the_maps_give_the_same_report(tmp_path: Path) -> None:
    """The issue's form, before the maps, reads the files the maps' tags would name."""
    maps, probs = [], []
    for i in range(2):
        p = random_probabilities((20, 30), i)
        maps.append(str(write_labels(tmp_path / f"lc{i}.tif", labels_of(p))))
        probs.append(str(write_probabilities(Path(maps[-1]), p, tag=i == 0)))
    runs = {
        "given": ["--rule", "posterior", "--probabilities-of", *probs, *maps, "-o"],
        "repeated": ["--probabilities-of", probs[0], "--probabilities-of", probs[1],
                     "--rule", "posterior", *maps, "-o"],
    }  # fmt: skip
    docs = []
    for name, args in runs.items():
        res = CliRunner().invoke(cli, ["change", *args, str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        docs.append(json.loads((tmp_path / name / "transitions.json").read_text()))
    assert docs[0]["transitions"] == docs[1]["transitions"]
    assert docs[0]["uncertain"]["pixels"] > 0 and docs[0]["rule"] == "posterior"
