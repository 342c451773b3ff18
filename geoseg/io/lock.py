"""A lock file beside an output, so that two runs never write (and wipe the parts of) one output.

``.<name>.lock`` holds the pid, host and start time of the run that writes
``<name>``. It is made whole under a temporary name and linked into place, so
another run sees either no lock or a complete one. A lock left by a process
that no longer runs on this host is taken over (with a warning); a lock of a
live run, or of a run on another host, is refused with a message naming it.
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

__all__ = ["OutputLock", "lock_path"]

log = logging.getLogger(__name__)


def lock_path(target: Path) -> Path:
    """The lock file of the run writing ``target`` (a file or a folder)."""
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.lock")


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
