"""Write-then-rename: an output appears whole under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from geoseg.io.outputs import check_output_path, current_run, publish

__all__ = ["atomic_output", "check_output_path", "temporary_sibling"]


def _new_file_mode() -> int:
    """``0o666`` less the process umask (read without changing it where possible)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def temporary_sibling(path: Path, tag: str = "tmp") -> Iterator[Path]:
    """A fresh empty file beside ``path`` (mode from the umask), removed on exit."""
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.{tag}{path.suffix}")
    run = current_run()
    if run is not None:  # journalled first: a run killed outright leaves none behind
        run.temporary(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
    finally:
        for p in (tmp, Path(f"{tmp}.aux.xml")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Inside an :func:`geoseg.io.outputs.output_run` the rename is part of the run:
    undone if the run fails later.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    out = Path(path)
    check_output_path(out, overwrite)
    with temporary_sibling(out) as tmp:
        yield tmp
        os.chmod(tmp, _new_file_mode())  # some writers (safetensors) create files as 0600
        publish(tmp, out)
