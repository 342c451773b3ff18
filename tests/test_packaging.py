"""pyproject.toml and environment.yml name the same dependencies with the same bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "types-pyyaml": "types-pyyaml"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", req)
    assert m, req
    return m.group(1).lower(), m.group(3).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    out = {}
    for req in reqs:
        name, spec = _split(req)
        out[CONDA_NAMES.get(name, name)] = spec
    # dask[distributed] is two packages on conda-forge
    if "dask" in out:
        out["distributed"] = out["dask"]
    return out


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and not dep.startswith(("python", "pip")):
            name, spec = _split(dep)
            out[name] = spec
    return out


def test_environment_yml_matches_pyproject() -> None:
    assert _environment() == _pyproject()


def test_package_ships_type_marker() -> None:
    assert (ROOT / "geoseg" / "py.typed").is_file()


def test_passed_tests_leave_no_temporary_files(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A full run writes ~7 GB into tmp_path; CI disks have had less free than that.

    Only failed tests keep their directories, and only the last session is kept.
    """
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["tmp_path_retention_policy"] == "failed"
    assert int(options["tmp_path_retention_count"]) <= 1
    assert tmp_path_factory._retention_policy == "failed"
