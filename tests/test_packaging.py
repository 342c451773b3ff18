"""pyproject.toml and environment.yml name the same dependencies with the same bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
