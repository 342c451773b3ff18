"""One hostile CLI case, and how every table-driven ``tests/test_hostile_*.py`` runs it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli

__all__ = ["CliCase", "run_cli_case"]


@dataclass(frozen=True)
class CliCase:
    """A command line built in a test's folder, and what it must and must not do.

    Attributes:
        build: makes the inputs under the folder and returns the argv.
        exit_code: 0, or 2 for a refusal (then exactly one line of output).
        says: words the output or the warnings logged must hold.
        never: words they must not hold.
        absent: files (relative to the folder) that must not exist afterwards.
    """

    build: Callable[[Path], list[str]]
    exit_code: int
    says: tuple[str, ...]
    never: tuple[str, ...] = field(default=())
    absent: tuple[str, ...] = field(default=())


def run_cli_case(case: CliCase, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Run ``case`` in ``tmp_path`` and assert everything it states.

    No case may end in a bare KeyError/TypeError/ValueError/AttributeError (a traceback
    where a message belongs).
    """
    argv = case.build(tmp_path)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(cli, argv)
    text = result.output + " ".join(r.getMessage() for r in caplog.records)
    assert result.exit_code == case.exit_code, text
    assert not isinstance(result.exception, (KeyError, TypeError, ValueError, AttributeError))
    if case.exit_code == 2:
        assert len(result.output.strip().splitlines()) == 1, result.output
    for part in case.says:
        assert part in text, f"{part!r} not in {text!r}"
    for part in case.never:
        assert part not in text, f"{part!r} in {text!r}"
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), rel
