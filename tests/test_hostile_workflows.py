"""Hostile workflow files and option values: exit 2, one line naming the fault, nothing written.

Every case runs the real command (``geoseg run`` or another subcommand) and checks
that the run folder holds exactly what it held before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from tests.conftest import TINY_BANDS, textured_scene, write_raster

HEAD = "scenes: [a.tif, b.tif]\nmodel: spectral\noutput: out\n"
FOCUS = "focus: {from: [water], to: [vegetation]}\n"


def _bomb(key: str, levels: int = 6) -> str:
    """A "billion laughs" under ``key``: 9 ** ``levels`` strings from a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}: *l{levels - 1}\n"


def _deep(key: str, levels: int = 5000) -> str:
    return f"{key}: " + "[" * levels + "]" * levels + "\n"


def _existing_report(root: Path) -> None:
    (root / "out" / "report").mkdir(parents=True)
    (root / "out" / "report" / "index.html").write_text("an earlier report")


def _read_only_parent(root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write into a read-only folder")
    (root / "locked").mkdir()
    (root / "locked").chmod(0o555)


# (workflow text, setup of the run folder, words the one-line error holds)
WORKFLOWS: dict[str, tuple[str | bytes, Callable[[Path], None] | None, str]] = {
    "focus from is a string": (
        HEAD + "focus: {from: water, to: [vegetation]}\n", None,
        "focus.from: expected a list of names, e.g. [water], got 'water'",
    ),
    "misspelled focus class": (
        HEAD + "focus: {from: [watr], to: [vegetation]}\n", None,
        "focus.from[0]: 'watr' is not a class of spectral; its classes: water, vegetation",
    ),
    "focus to a number": (
        HEAD + "focus: {from: [water], to: [3]}\n", None, "focus.to[0]: expected a name, got 3"
    ),
    "focus without a transition": (
        HEAD + "focus: {from: [water], to: [water]}\n", None, "no transition to add up"
    ),
    "unknown focus key": (
        HEAD + "focus: {from: [water], to: [bare], nmae: x}\n", None,
        "focus: unknown key 'nmae'; valid keys: from, name, to",
    ),
    "window is text": (
        HEAD + "predict: {window: abc}\n", None,
        "predict.window: expected an integer >= 1, got 'abc'",
    ),
    "predict chunk zero": (
        HEAD + "predict: {chunk: 0}\n", None, "predict.chunk: expected an integer >= 1, got 0"
    ),
    "predict chunk negative": (
        HEAD + "predict: {chunk: -512}\n", None,
        "predict.chunk: expected an integer >= 1, got -512",
    ),
    "predict margin negative": (
        HEAD + "predict: {margin: -8}\n", None, "predict.margin: expected an integer >= 0, got -8"
    ),
    "batch size true": (
        HEAD + "predict: {batch_size: true}\n", None,
        "predict.batch_size: expected an integer >= 1, got True",
    ),
    "workers zero": (
        HEAD + "predict: {workers: 0}\n", None, "predict.workers: expected an integer >= 1, got 0"
    ),
    "bands a number": (
        HEAD + "predict: {bands: 3}\n", None,
        "predict.bands: expected a list of band names or numbers, got 3",
    ),
    "blend unknown": (
        HEAD + "predict: {blend: cubic}\n", None,
        "predict.blend: expected one of trim, hann, got 'cubic'",
    ),
    "change chunk zero": (
        HEAD + "change: {chunk: 0}\n", None, "change.chunk: expected an integer >= 1, got 0"
    ),
    "mmu negative": (
        HEAD + "change: {mmu_ha: -0.5}\n", None,
        "change.mmu_ha: expected a number >= 0.0, got -0.5",
    ),
    "mmu nan": (HEAD + "change: {mmu_ha: .nan}\n", None, "change.mmu_ha: expected a number"),
    "name is a list": (HEAD + "name: [a, b]\n", None, "name: expected text, got ['a', 'b']"),
    "predict is a list": (
        HEAD + "predict: [chunk, 512]\n", None,
        "predict: expected a mapping of key: value, got ['chunk', 512]",
    ),
    "empty file": ("", None, "expected a mapping with scenes, model and output, got None"),
    "scene missing": (
        "scenes: [a.tif, c.tif]\nmodel: spectral\noutput: out\n", None,
        "scenes[1] 'c.tif': no such file",
    ),
    "model missing": (
        "scenes: [a.tif, b.tif]\nmodel: m.safetensors\noutput: out\n", None,
        "model 'm.safetensors': no such file",
    ),
    "model not a checkpoint": (
        "scenes: [a.tif, b.tif]\nmodel: a.tif\noutput: out\n", None,
        "not a safetensors file",
    ),
    "invalid utf-8": (HEAD.encode() + b"name: caf\xe9\n", None, "not UTF-8 text (byte "),
    "alias bomb under name": (
        HEAD + _bomb("name"), None, "expands to more than 10000 values"
    ),
    "alias bomb under scenes": (
        "model: spectral\noutput: out\n" + _bomb("scenes"), None,
        "expands to more than 10000 values",
    ),
    "recursive alias": (HEAD + "name: &n [1, *n]\n", None, "an alias refers to a node"),
    # PyYAML keeps the last of two equal keys: the run wrote to o10 and said nothing
    "output twice": (
        HEAD + "output: o10\n", None,
        "key 'output' appears twice (lines 3 and 4); YAML would keep only the last",
    ),
    "nested key twice": (
        HEAD + "predict:\n  chunk: 512\n  window: 64\n  chunk: 256\n", None,
        "key 'chunk' appears twice in predict (lines 5 and 7)",
    ),
    "nested too deep": (HEAD + _deep("name"), None, "nested too deeply to read"),
    "scene is a folder": (
        "scenes: [a.tif, sub]\nmodel: spectral\noutput: out\n",
        lambda root: (root / "sub").mkdir(), "/sub is a folder; give a file in it",
    ),
    "report exists": (
        HEAD, _existing_report, "index.html exists; pass --overwrite to replace it"
    ),
    "output is a file": (
        "scenes: [a.tif, b.tif]\nmodel: spectral\noutput: a.tif\n", None,
        "is a file; give a folder",
    ),
    "output parent read-only": (
        "scenes: [a.tif, b.tif]\nmodel: spectral\noutput: locked/out\n", _read_only_parent,
        "is not writable",
    ),
}  # fmt: skip


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """Two small 4-band Sentinel-2 scenes the ``spectral`` model reads."""
    for name, seed in (("a.tif", 0), ("b.tif", 1)):
        write_raster(tmp_path / name, textured_scene(48, 40, seed=seed), descriptions=TINY_BANDS)
    return tmp_path


def test_the_base_workflow_runs(run_folder: Path) -> None:
    """The cases below differ from a workflow that runs in one fault each."""
    (run_folder / "wf.yaml").write_text(HEAD + FOCUS + "predict: {chunk: 512}\n")
    result = CliRunner().invoke(
        cli, ["run", str(run_folder / "wf.yaml"), "--root", str(run_folder)]
    )
    assert result.exit_code == 0, result.output
    assert (run_folder / "out" / "summary.json").is_file()
    assert (run_folder / "out" / "report" / "index.html").is_file()
    # the scenes carry no date: the run says it took the order given, as `change` does
    assert "the order given is taken as time order" in result.output


@pytest.mark.parametrize("case", list(WORKFLOWS))
def test_hostile_workflow_is_refused_before_any_output(run_folder: Path, case: str) -> None:
    text, setup, words = WORKFLOWS[case]
    path = run_folder / "wf.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    if setup is not None:
        setup(run_folder)
    before = _tree(run_folder)
    result = CliRunner().invoke(cli, ["run", str(path), "--root", str(run_folder)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an uncaught error
    line = result.output.strip()
    assert line.count("\n") == 0 and line.startswith("geoseg: error: ")
    assert words in line and str(path) in line
    assert _tree(run_folder) == before


# (subcommand and its arguments, with {d} for the test folder; words of click's message)
OPTIONS: dict[str, tuple[str, str]] = {
    "predict --chunk 0": ("predict {d}/a.tif -m spectral -o {d}/o.tif --chunk 0", "--chunk"),
    "predict --chunk -512": ("predict {d}/a.tif -m spectral -o {d}/o.tif --chunk -512", "--chunk"),
    "predict --window 0": ("predict {d}/a.tif -m spectral -o {d}/o.tif --window 0", "--window"),
    "predict --margin -1": ("predict {d}/a.tif -m spectral -o {d}/o.tif --margin -1", "--margin"),
    "predict --batch-size 0": (
        "predict {d}/a.tif -m spectral -o {d}/o.tif --batch-size 0", "--batch-size"
    ),
    "predict --workers 0": ("predict {d}/a.tif -m spectral -o {d}/o.tif --workers 0", "--workers"),
    "predict --gpus 0": ("predict {d}/a.tif -m spectral -o {d}/o.tif --gpus 0", "--gpus"),
    "predict --torch-threads 0": (
        "predict {d}/a.tif -m spectral -o {d}/o.tif --torch-threads 0", "--torch-threads"
    ),
    "vectorize --chunk 0": ("vectorize {d}/a.tif -o {d}/o.gpkg --chunk 0", "--chunk"),
    "vectorize --simplify -1": ("vectorize {d}/a.tif -o {d}/o.gpkg --simplify -1", "--simplify"),
    "vectorize --min-area-ha nan": (
        "vectorize {d}/a.tif -o {d}/o.gpkg --min-area-ha nan", "--min-area-ha"
    ),
    "change --chunk 0": ("change {d}/a.tif {d}/b.tif -o {d}/r --chunk 0", "--chunk"),
    "change --consistency 0": (
        "change {d}/a.tif {d}/b.tif -o {d}/r --consistency 0", "--consistency"
    ),
    "change --mmu-ha -1": ("change {d}/a.tif {d}/b.tif -o {d}/r --mmu-ha -1", "--mmu-ha"),
    "change --mmu-ha inf": ("change {d}/a.tif {d}/b.tif -o {d}/r --mmu-ha inf", "--mmu-ha"),
    "change --samples-se 0": ("change {d}/a.tif {d}/b.tif -o {d}/r --samples-se 0", "--samples-se"),
    "change --workers -2": ("change {d}/a.tif {d}/b.tif -o {d}/r --workers -2", "--workers"),
    "evaluate --chunk 0": (
        "evaluate -m spectral --image {d}/a.tif --labels {d}/b.tif -o {d}/e --chunk 0", "--chunk"
    ),
    "evaluate --window 0": (
        "evaluate -m spectral --image {d}/a.tif --labels {d}/b.tif -o {d}/e --window 0",
        "--window",
    ),
    "train --epochs 0": ("train --image {d}/a.tif --labels {d}/b.tif -o {d}/m.safetensors "
                         "--epochs 0", "--epochs"),
    "train --lr 0": ("train --image {d}/a.tif --labels {d}/b.tif -o {d}/m.safetensors --lr 0",
                     "--lr"),
    "train --margin -1": ("train --image {d}/a.tif --labels {d}/b.tif -o {d}/m.safetensors "
                          "--margin -1", "--margin"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OPTIONS))
def test_out_of_range_option_is_refused(run_folder: Path, case: str) -> None:
    command, option = OPTIONS[case]
    before = _tree(run_folder)
    result = CliRunner().invoke(cli, command.format(d=run_folder).split())
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert _tree(run_folder) == before


# Sibling YAML files: a training config and a class list (same loader as workflows)
CONFIGS: dict[str, tuple[str, str | bytes, str]] = {
    "config alias bomb": ("--config", _bomb("arch"), "expands to more than 10000 values"),
    "config nested too deep": ("--config", _deep("arch"), "nested too deeply to read"),
    "config not utf-8": ("--config", b"arch: unet\nencoder: r\xe9snet\n", "not UTF-8 text"),
    "classes alias bomb": ("--classes", _bomb("classes"), "expands to more than 10000 values"),
    "classes not utf-8": ("--classes", b"- {id: 1, name: for\xeat}\n", "not UTF-8 text"),
    # a KeyError leaked: "malformed class schema: 'colour'"
    "classes without colour": (
        "--classes", "- {id: 0, name: a, colour: [0, 0, 0]}\n- {id: 1, name: b}\n",
        "class entry 2 (id 1, name 'b') has no colour; each class needs an id, a name and a "
        "colour (required, [r, g, b] 0-255)",
    ),
    "config key twice": (
        "--config", "arch: unet\nepochs: 3\narch: fcn\n", "key 'arch' appears twice (lines 1 and 3)"
    ),
    "classes key twice": (
        "--classes", "- {id: 1, name: a, colour: [0, 0, 0]}\n- id: 2\n  name: b\n  id: 3\n",
        "key 'id' appears twice in [1] (lines 2 and 4)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONFIGS))
def test_hostile_training_yaml_is_refused(run_folder: Path, case: str) -> None:
    option, text, words = CONFIGS[case]
    path = run_folder / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = _tree(run_folder)
    args = ["train", "--image", str(run_folder / "a.tif"), "--labels", str(run_folder / "b.tif")]
    result = CliRunner().invoke(
        cli, [*args, "-o", str(run_folder / "m.safetensors"), option, str(path)]
    )
    assert result.exit_code == 2, (result.output, result.exception)
    assert words in result.output and str(path) in result.output
    assert _tree(run_folder) == before
