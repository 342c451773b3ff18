"""geoseg.io.checkpoint: bounded metadata and finite weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geoseg.errors import CheckpointError
from geoseg.io.checkpoint import (
    MAX_META_DEPTH,
    load_training_state,
    parse_metadata_json,
    save_training_state,
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[" * 200_000 + "]" * 200_000, "nests 200000 levels deep"),
        ("[" * (MAX_META_DEPTH + 1) + "]" * (MAX_META_DEPTH + 1), "nests 33 levels deep"),
        (json.dumps({"a": "x" * (1 << 20)}), "characters, more than the 1048576"),
        ('{"a": [1, 2', "malformed metadata JSON: not JSON"),
    ],
)
def test_bad_metadata_is_refused_naming_the_file(text: str, words: str) -> None:
    with pytest.raises(CheckpointError, match=r"^m\.safetensors: ") as err:
        parse_metadata_json("m.safetensors", text)
    assert words in str(err.value)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"a": '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ in a string \\" {{{{{{{{{{'},
        _nested(MAX_META_DEPTH),
    ],
    ids=["brackets in a string", "32 deep"],
)
def test_metadata_within_bounds_parses(value: object) -> None:
    assert parse_metadata_json("m.safetensors", json.dumps(value)) == value


def test_training_state_metadata_is_bounded_too(tmp_path: Path) -> None:
    path = save_training_state(
        tmp_path / "s.safetensors", {"w": torch.zeros(2)}, {"x": _nested(36)}
    )
    words = r"s\.safetensors: malformed metadata JSON: it nests 37 "
    with pytest.raises(CheckpointError, match=words):
        load_training_state(path)
