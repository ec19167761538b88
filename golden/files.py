"""Output files: check a path before long work starts, write it atomically, leave nothing behind on failure.

``check_output_file(path)`` fails with a one-line :class:`UserError` when ``path`` cannot be written (it is a
folder, an ancestor is a file, the nearest existing folder is not writable); it creates nothing.
``atomic_output(path)`` yields a uniquely named temporary path beside ``path`` (creating missing parent folders),
renames it over ``path`` on success and removes it, and every folder it created, on any failure;
``write_outputs({path: contents})`` writes several files that way, all or none.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import UserError


def _nearest_existing(path: Path) -> Path:
    p = path.parent
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe(folder: Path, failure: str) -> None:
    """Create and remove one temporary file in ``folder``: the only sure test of writability (root ignores modes)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"{failure}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there; a one-line UserError otherwise. Creates nothing."""
    path = Path(path)
    if str(path) == "" or path.name in ("", ".", ".."):
        raise UserError(f"{what} path {str(path)!r} is not a file name")
    if path.is_dir():
        raise UserError(f"{what} path {path} is a folder, expected a file")
    if path.exists() and not path.is_file():   # a device, a FIFO, a socket: never replaced by a regular file
        raise UserError(f"{what} path {path} exists and is not a regular file")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"cannot write {what} {path}: {base} is not a folder")
    _probe(base, f"cannot write {what} {path}")
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a Path if it is, or can be made, a writable folder; a one-line UserError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} exists and is not a folder")
    base = path if path.is_dir() else _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"cannot create {what} {path}: {base} is not a folder")
    _probe(base, f"cannot write into {what} {path}")
    return path


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; return the ones created, deepest last."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        for d in reversed(missing):
            d.mkdir()
    except OSError as exc:
        _remove_dirs(missing)
        raise UserError(f"cannot create folder {missing[0]}: {exc.strerror or exc}") from None
    return list(reversed(missing))


def _remove_dirs(created: list[Path]) -> None:
    for d in sorted(created, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ""):
    """Yield a unique temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    ``suffix`` keeps a file type visible to writers that choose a format by extension (``.png``, ``.npz``).
    """
    path = check_output_file(path)
    created = _make_parents(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    except OSError as exc:
        _remove_dirs(created)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result gets the mode a plain open() would give
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_dirs(created)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def write_outputs(files: dict) -> list[Path]:
    """Write several output files together: ``{path: text | bytes | writer}`` (``writer(tmp_path)`` writes the file,
    e.g. a plot). Every file is first written under a temporary name beside its target; only when all are written
    are they renamed into place, so a failure (or Ctrl-C) leaves none of them, new or half-written."""
    with contextlib.ExitStack() as stack:
        out = []
        for path, data in files.items():
            path = Path(path)
            tmp = stack.enter_context(atomic_output(path, path.suffix))
            if callable(data):
                data(tmp)
            elif isinstance(data, bytes):
                tmp.write_bytes(data)
            else:
                tmp.write_text(data)
            out.append(path)
    return out


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, replace=None):
    """Yield a new, uniquely named temporary folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only when ``replace(path)`` is true (e.g. "it is a previous export"); otherwise
    it is a one-line UserError before anything is written. On any failure (including Ctrl-C and, under
    :func:`golden.errors.cli_main`, SIGTERM) the temporary folder and every parent folder created are removed.
    """
    import shutil

    path = check_output_dir(path)
    if path.name in ("", ".", ".."):
        raise UserError(f"output folder {str(path)!r} is not a folder name")
    if path.exists() and not (replace is not None and replace(path)):
        raise UserError(f"{path} exists and cannot be replaced; choose another output folder")
    created = _make_parents(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        _remove_dirs(created)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result gets the mode a plain mkdir() would give
    old = None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(old, path)
        _remove_dirs(created)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def remove_dir_on_failure(path: str | Path, what: str = "output folder"):
    """For a command that fills the folder ``path`` step by step: if the block fails (an exception, Ctrl-C, SIGTERM
    under cli_main; not ``SystemExit``, a finished run's verdict), remove what the run created there: the whole
    folder and every parent created for it when it did not exist before, else every file and folder in it that
    was not there when the block began. A failed run leaves nothing behind."""
    import shutil

    path = check_output_dir(path, what)
    existed = path.exists()
    before = {p for p in path.rglob("*")} if existed else set()
    missing = []
    p = path.parent
    while not existed and not p.exists():
        missing.append(p)
        p = p.parent
    try:
        yield path
    except SystemExit:
        raise
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
            _remove_dirs(missing)
        else:
            new = sorted((q for q in path.rglob("*") if q not in before), key=lambda q: len(q.parts), reverse=True)
            for q in new:
                with contextlib.suppress(OSError):
                    if q.is_dir() and not q.is_symlink():
                        shutil.rmtree(q, ignore_errors=True)
                    else:
                        q.unlink()
        raise
