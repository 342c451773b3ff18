"""read_yaml: a key written twice in one mapping is refused; merge keys still work."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import ConfigError, GeosegError
from geoseg.io.yaml_files import read_yaml


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return path


def test_a_key_twice_is_refused_naming_the_file_the_key_and_both_lines(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "name: x\noutput: o9\nscenes: [a.tif]\noutput: o10\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    assert isinstance(caught.value, GeosegError)
    assert str(caught.value) == (
        f"{path}: key 'output' appears twice (lines 2 and 4); YAML would keep only the last: "
        "delete one"
    )


def test_a_nested_key_twice_is_named_by_its_place(tmp_path: Path) -> None:
    text = "steps:\n  - predict: {chunk: 1}\n  - predict:\n      a: 1\n      a: 2\n"
    words = r"key 'a' appears twice in steps\[1\]\.predict \(lines 4 and 5\)"
    with pytest.raises(ConfigError, match=words):
        read_yaml(_yaml(tmp_path, text))


def test_the_same_key_on_one_flow_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'id' appears twice in \[0\] \(lines 1 and 1\)"):
        read_yaml(_yaml(tmp_path, "- {id: 1, name: a, id: 2}\n"))


def test_merge_keys_and_keys_of_other_types_are_not_duplicates(tmp_path: Path) -> None:
    text = "base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  a: 3\ny: {1: int, '1': text}\nz: *b\n"
    assert read_yaml(_yaml(tmp_path, text)) == {
        "base": {"a": 1, "b": 2}, "x": {"a": 3, "b": 2}, "y": {1: "int", "1": "text"},
        "z": {"a": 1, "b": 2},
    }  # fmt: skip
