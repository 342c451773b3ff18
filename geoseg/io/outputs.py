"""The outputs of one run as a transaction: checked first, locked, kept together or not at all.

A command opens :func:`output_run` and registers every destination it will write
before any work starts. Each is checked then (its folder exists and is writable,
it is not a folder, not an input, not there already unless ``overwrite``) and the
run takes a lock file beside its main output (:mod:`geoseg.io.lock`), so a second
run writing the same output is refused with a message naming the first. Writers
publish through :func:`publish` (``io.atomic`` does): a registered destination
that existed is first moved aside, so that if the run fails every output it
published is removed, every replaced one is put back and every folder it made is
removed again. Files of an earlier run that an overwriting run supersedes without
writing them (:meth:`OutputRun.retire`) are removed only once it has succeeded. A
failure for want of space or permission becomes one :class:`~geoseg.errors.GeosegError`
naming the place.

The run in progress lives in a context variable rather than being passed down:
the writers sit several calls below the pipelines (labels, vectors, reports,
previews) and a nested pipeline (``predict --vector``, a workflow) joins the run
of its caller. Threads that dask starts do not see it; they write only parts,
which are not outputs (they stay for ``--resume``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import resource
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from geoseg.errors import DiskFullError, GeosegError, OutputExistsError, OutputNotWritableError
from geoseg.io.lock import OutputLock, journal_path

__all__ = [
    "OutputRun",
    "check_output_path",
    "check_writable",
    "current_run",
    "disk_full",
    "no_space_message",
    "output_error",
    "output_run",
    "publish",
]

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
#: How GDAL, SQLite and Arrow say the disk is full when no errno comes through.
_NO_SPACE_TEXT = (
    "no space left", "disk full", "database or disk is full", "free disk space available",
    "file too large", "not enough space",
)  # fmt: skip
_DENIED_TEXT = ("permission denied", "read-only file system")
#: Free bytes under which a failed write is put down to a full disk.
_FULL_BYTES = 1 << 20
#: A write that would pass the file size limit stops this close below it.
_LIMIT_SLACK_BYTES = 1 << 16


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def check_writable(folder: Path) -> None:
    """Refuse a folder (or, if it is still to be made, its nearest parent) we cannot write.

    Raises:
        OutputNotWritableError: no write permission, or a read-only file system.
    """
    existing = _key(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputNotWritableError(
            f"{existing}: cannot write there (no permission or a read-only disk); "
            "choose another output folder or change its permissions"
        )


def _missing_folder(path: Path) -> str:
    """The refusal of an output whose folder does not exist (README: checked, never made)."""
    return (
        f"{path}: the folder {path.parent} does not exist; create it first (mkdir -p {path.parent})"
    )


def check_output_path(path: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse an output that cannot be written, before any work.

    Raises:
        GeosegError: the folder is missing, the output is a folder or an input.
        OutputNotWritableError: the folder cannot be written.
        OutputExistsError: it exists and ``overwrite`` is False.
    """
    if not path.parent.is_dir():
        raise GeosegError(_missing_folder(path))
    if path.is_dir():
        raise GeosegError(f"{path}: is a folder; give a file name for the output")
    check_writable(path.parent)
    for src in inputs:
        if src.exists() and path.exists() and path.samefile(src):
            raise GeosegError(f"{path}: is also an input; choose another output name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")


def disk_full(files: Sequence[Path]) -> bool:
    """Whether writing ``files`` (being written, not yet removed) has run out of room.

    True if the disk holding them has (almost) no space left for this user, or one
    of them has reached the largest file the system lets this process write
    (``ulimit -f``). Drivers such as FlatGeobuf or SQLite say only "I/O failure"
    then; the disk itself tells.
    """
    if not files:
        return False
    with contextlib.suppress(OSError):
        st = os.statvfs(files[0].parent)
        if st.f_bavail * st.f_frsize < _FULL_BYTES:
            return True
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    sizes = [p.stat().st_size for p in files if p.is_file()]
    return any(size >= limit - _LIMIT_SLACK_BYTES for size in sizes)


class OutputRun:
    """The destinations of one run, what it published, replaced and made; see module doc."""

    def __init__(self, overwrite: bool, inputs: Sequence[Path]) -> None:
        self.overwrite, self.inputs = overwrite, list(inputs)
        self.main: Path | None = None
        self._files: set[Path] = set()
        self._published: list[Path] = []
        self._backups: list[tuple[Path, Path]] = []
        self._folders: list[Path] = []
        self._locks: dict[Path, OutputLock] = {}
        self._retired: list[Path] = []
        self._journal: Path | None = None
        self._on_success: list[Callable[[], None]] = []

    def on_success(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the whole run has succeeded (e.g. drop ``--resume`` parts
        that a failure later in the run should keep)."""
        self._on_success.append(action)

    def temporary(self, path: Path) -> None:
        """Journal a temporary file about to be made for this run (removed, with its
        ``.aux.xml``, by the run that takes over if this one is killed)."""
        self._log({"tmp": str(_key(path))})

    def _log(self, entry: dict[str, object]) -> None:
        """Append ``entry`` to the journal (:mod:`geoseg.io.lock`), durably, before the
        file system changes it describes."""
        if self._journal is None:
            return
        with open(self._journal, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, paths: Iterable[Path]) -> None:
        """Check and register output files (already registered ones pass)."""
        for path in paths:
            if _key(path) not in self._files:
                check_output_path(path, self.overwrite, self.inputs)
                self._files.add(_key(path))

    def add_folder(self, folder: Path, files: Sequence[str], parents: bool = False) -> list[Path]:
        """Check, lock and register an output folder and the files it will hold.

        ``parents``: the folders above it may be missing too (:meth:`make_folder` makes them).
        """
        if folder.exists() and not folder.is_dir():
            raise GeosegError(f"{folder}: is a file; give a folder for the outputs")
        if not parents and not folder.parent.is_dir():
            raise GeosegError(_missing_folder(folder))
        check_writable(folder)
        self.lock(folder, make_folder=True)
        paths = [folder / name for name in files]
        if folder.is_dir():
            self.add(paths)
        else:
            self._files.update(_key(p) for p in paths)
        return paths

    def retire(self, paths: Iterable[Path]) -> None:
        """Files of an earlier run that this run supersedes without writing them: removed
        once it has succeeded (kept if it fails); an input of the run is never removed."""
        self._retired.extend(paths)

    def lock(self, target: Path, make_folder: bool = False) -> None:
        """Take the lock of ``target`` for this run (once); the first one names the run.

        The lock file goes beside ``target``. Its folder must exist (every output's
        folder is checked, never made, README "Outputs") unless ``make_folder``: an
        output folder (:meth:`add_folder`) whose missing parents the run makes.

        Raises:
            GeosegError: the folder of ``target`` does not exist.
        """
        if not make_folder and not _key(target).parent.is_dir():
            raise GeosegError(_missing_folder(target))
        check_writable(_key(target).parent)
        self.main = self.main or target
        if _key(target) not in self._locks:
            self.make_folder(_key(target).parent)
            self._locks[_key(target)] = OutputLock.take(target)
            self._journal = self._journal or journal_path(target)

    def make_folder(self, folder: Path) -> None:
        """``mkdir -p`` that remembers what it made, to remove it if the run fails."""
        missing = [p for p in (_key(folder), *_key(folder).parents) if not p.exists()]
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            self._folders.append(path)

    def publish(self, tmp: Path, out: Path) -> None:
        """Rename ``tmp`` to ``out``; a registered ``out`` that was there is kept aside."""
        key = _key(out)
        if key in self._files and key not in self._published:
            aside = None
            if os.path.lexists(out):
                aside = key.with_name(f".{out.name}.{secrets.token_hex(4)}.replaced")
            self._log({"out": str(key), "aside": None if aside is None else str(aside)})
            if aside is not None:
                os.replace(out, aside)
                self._backups.append((aside, out))
            self._published.append(key)
        os.replace(tmp, out)

    def finish(self, ok: bool) -> None:
        """Keep the outputs (drop what they replaced) or put everything back; unlock."""
        try:
            if ok:
                if self._published:
                    self._log({"commit": True})
                for aside, _ in self._backups:
                    with contextlib.suppress(FileNotFoundError):
                        aside.unlink()
                self._remove_retired()
                for action in self._on_success:
                    action()
            else:
                self._roll_back()
            if self._journal is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._journal.unlink()
        finally:
            for held in self._locks.values():
                held.release()
        if not ok:  # after the locks, whose files may sit in these folders
            self._remove_folders()

    def _remove_retired(self) -> None:
        for path in self._retired:
            if not path.is_file() or _key(path) in self._published:
                continue
            if not any(src.exists() and path.samefile(src) for src in self.inputs):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _roll_back(self) -> None:
        for path in reversed(self._published):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for aside, out in reversed(self._backups):
            with contextlib.suppress(OSError):
                os.replace(aside, out)

    def _remove_folders(self) -> None:
        for folder in reversed(self._folders):
            with contextlib.suppress(OSError):  # not empty: something else put files there
                folder.rmdir()


_RUN: contextvars.ContextVar[OutputRun | None] = contextvars.ContextVar("geoseg_run", default=None)


def current_run() -> OutputRun | None:
    """The run this code writes for, if any."""
    return _RUN.get()


@contextlib.contextmanager
def output_run(overwrite: bool = False, inputs: Sequence[Path] = ()) -> Iterator[OutputRun]:
    """A transaction over the outputs of one run; a nested call joins the outer run.

    On failure every output published in the run is rolled back (see module
    doc) and a full disk or a refused write becomes one error naming the place.
    """
    outer = _RUN.get()
    if outer is not None:
        outer.inputs.extend(inputs)
        yield outer
        return
    run = OutputRun(overwrite, inputs)
    token = _RUN.set(run)
    try:
        yield run
    except BaseException as exc:
        failure = output_error(exc, run.main)
        run.finish(ok=False)
        if failure is not None:
            raise failure from exc
        raise
    else:
        run.finish(ok=True)
    finally:
        _RUN.reset(token)


def publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` over ``out``, as part of the run in progress if there is one."""
    run = _RUN.get()
    if run is None:
        os.replace(tmp, out)
    else:
        run.publish(tmp, out)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def output_error(exc: BaseException, where: Path | None) -> GeosegError | None:
    """The one-line error for a write that failed for want of space or permission, or None.

    A geoseg error about something else (e.g. an unreadable input) stays as it is:
    only a full disk is recognised behind one.
    """
    if isinstance(exc, KeyboardInterrupt | SystemExit | DiskFullError | OutputNotWritableError):
        return None
    for node in _chain(exc):
        text = str(node).lower()
        code = node.errno if isinstance(node, OSError) else None
        if code in _NO_SPACE or any(t in text for t in _NO_SPACE_TEXT):
            return DiskFullError(no_space_message(where or getattr(node, "filename", None)))
        if isinstance(exc, GeosegError):
            continue
        if code in _DENIED or any(t in text for t in _DENIED_TEXT):
            name = getattr(node, "filename", None)  # a temporary beside the output
            folder = os.path.abspath(os.path.dirname(name)) if name else where
            return OutputNotWritableError(
                f"{folder}: cannot write there (no permission or a read-only disk); "
                "choose another output folder or change its permissions"
            )
    return None


def no_space_message(place: object) -> str:
    """What geoseg says when writing ``place`` ran out of room."""
    return (
        f"no space left on {place or 'the output disk'} (or a file grew past the size the "
        "system allows); free some space there or write the outputs to another disk"
    )
