"""A lock file beside an output, so that two runs never write (and wipe the parts of) one output.

``.<name>.lock`` holds the pid, host and start time of the run that writes
``<name>``. It is made whole under a temporary name and linked into place, so
another run sees either no lock or a complete one. A lock left by a process
that no longer runs on this host is taken over (with a warning); a lock of a
live run, or of a run on another host, is refused with a message naming it.

A run that replaces outputs keeps a journal beside its lock, ``.<name>.lock.journal``
(:mod:`geoseg.io.outputs` writes it): one JSON line per output, written before the
output is touched, naming the output and where its earlier version was moved aside
(and one per temporary file the run makes, removed by the recovery),
and a last line ``{"commit": true}`` once the run has succeeded. Taking over the lock
of a run that died (``kill -9``, a power cut) finishes that run's transaction first
(:func:`recover_journal`): before its commit, every output it published is removed
and every earlier version put back, so the folder holds the earlier run again, not a
mix of two; after its commit, only the leftover earlier versions are removed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import GeosegError, OutputLockedError
from geoseg.io.json_text import parse_json

__all__ = ["OutputLock", "journal_path", "lock_path", "recover_journal"]

log = logging.getLogger(__name__)


def lock_path(target: Path) -> Path:
    """The lock file of the run writing ``target`` (a file or a folder)."""
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.lock")


def journal_path(target: Path) -> Path:
    """The journal of the run writing ``target`` (see the module doc)."""
    lock = lock_path(target)
    return lock.with_name(f"{lock.name}.journal")


def _journal_entries(journal: Path) -> tuple[list[dict[str, str | None]], list[Path], bool]:
    """The output entries of ``journal``, its temporary files and whether it was
    committed; a line cut by the crash (the last one) is ignored: the file it names was
    not touched yet."""
    entries: list[dict[str, str | None]] = []
    temporaries: list[Path] = []
    committed = False
    for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("commit") is True:
            committed = True
        elif isinstance(entry, dict) and isinstance(entry.get("out"), str):
            entries.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("tmp"), str):
            temporaries.append(Path(entry["tmp"]))
    return entries, temporaries, committed


def recover_journal(target: Path) -> None:
    """Finish the transaction of a dead run on ``target`` from its journal, if it left one:
    roll it back (not committed) or drop the earlier versions it kept (committed)."""
    journal = journal_path(target)
    try:
        entries, temporaries, committed = _journal_entries(journal)
    except FileNotFoundError:
        return
    for tmp in temporaries:
        for path in (tmp, Path(f"{tmp}.aux.xml")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    restored = removed = 0
    for entry in reversed(entries):
        out, aside = Path(str(entry["out"])), entry.get("aside")
        if committed:
            if aside:
                with contextlib.suppress(FileNotFoundError):
                    Path(aside).unlink()
            continue
        if aside:  # the earlier version back; not moved aside yet: it is still in place
            if os.path.lexists(aside):
                os.replace(aside, out)
                restored += 1
        elif os.path.lexists(out):  # a new output of the dead run
            out.unlink()
            removed += 1
    if not committed and entries:
        log.warning(
            "%s: the run that died left %d new output(s), removed, and %d replaced one(s), "
            "put back: the outputs are those of the run before it", target, removed, restored,
        )  # fmt: skip
    journal.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class OutputLock:
    """A held lock; :meth:`release` removes its file (only if it is still ours)."""

    path: Path
    token: str

    @classmethod
    def take(cls, target: Path) -> OutputLock:
        """Lock ``target`` for this process.

        Raises:
            OutputLockedError: another live run holds it.
        """
        path = lock_path(target)
        token = secrets.token_hex(8)
        record = {
            "pid": os.getpid(), "host": socket.gethostname(), "token": token,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }  # fmt: skip
        staged = path.with_name(f"{path.name}.{token}")
        staged.write_text(json.dumps(record))
        try:
            for _ in range(3):
                with contextlib.suppress(FileExistsError):
                    os.link(staged, path)
                    recover_journal(target)  # a dead run's, now that no other can start
                    return cls(path, token)
                _take_over_if_stale(path, target)
        finally:
            staged.unlink()
        raise GeosegError(f"{path}: could not take the lock; run again")

    def release(self) -> None:
        """Remove the lock file if it still holds this run's token."""
        with contextlib.suppress(OSError, GeosegError):
            held = parse_json(self.path.read_bytes(), self.path, "lock file")
            if isinstance(held, dict) and held.get("token") == self.token:
                self.path.unlink()


def _take_over_if_stale(path: Path, target: Path) -> None:
    """Remove the lock at ``path`` if its run is gone; else refuse, naming that run."""
    try:
        held = parse_json(path.read_bytes(), path, "lock file")
        pid, host, started = int(held["pid"]), str(held["host"]), str(held["started"])
    except FileNotFoundError:
        return  # released meanwhile: try again
    except (OSError, GeosegError, ValueError, KeyError, TypeError, IndexError):
        raise OutputLockedError(
            f"{target}: locked by {path}, which cannot be read; if no other geoseg run "
            "writes this output, delete that file and run again"
        ) from None
    here = socket.gethostname()
    if host == here and not _alive(pid):
        log.warning(
            "%s: taking over the lock of run %d (started %s), which no longer runs", target,
            pid, started,
        )  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    raise OutputLockedError(
        f"{target}: another geoseg run is writing it (pid {pid} on {host}, started {started}); "
        f"wait for it to finish or stop it, or if it is gone delete {path}"
    )
