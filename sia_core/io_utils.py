"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C in the middle of a write never leaves a half-written file under the final name, and a write
that fails (disk full, read-only folder, a file where a folder should be) leaves the previous file as it was
and raises :class:`WriteError`, one line naming the folder (and, for a full disk, the space needed).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Optional, Union

from .errors import SIAError

__all__ = [
    "WriteError",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "append_line",
    "check_output_dir",
    "check_output_file",
    "remove_stale_tmp",
    "write_error",
    "check_distinct_targets",
    "file_sha256",
]

PathLike = Union[str, os.PathLike]

TMP_MARK = ".tmp"
"""Temporary files are ``.<name>.<random>.tmp<suffix>`` beside their target (hidden, never a final name)."""

_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


class WriteError(SIAError, OSError):
    """A file could not be written. Both a :class:`SIAError` (one line for the user) and an ``OSError`` (what
    code catching write failures expects)."""


def _size(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


_NEARLY_FULL = 1 << 20


def _disk_full(err: BaseException, folder: Path, needed: Optional[int]) -> bool:
    """Whether a failed write ran out of space. Writers say so in their own words (torch.save raises
    ``RuntimeError: ... unexpected pos``, safetensors ``... os error 28``), so a writer's own exception also counts
    when the disk is (nearly) full. Called while the partial file still holds its space."""
    if isinstance(err, OSError) and err.errno is not None:  # numpy's np.save says 'problem writing element', no errno
        return err.errno in _SPACE_ERRNOS
    if not isinstance(err, Exception):
        return False  # KeyboardInterrupt and the like
    text = str(err).lower()
    if "no space left" in text or "os error 28" in text or "quota exceeded" in text:
        return True
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return False
    return free < max(needed or 0, _NEARLY_FULL)


def write_error(err: OSError, path: PathLike, needed: Optional[int] = None) -> WriteError:
    """The one-line :class:`WriteError` for an ``OSError`` raised while writing ``path``.

    Args:
        err: the error the write raised.
        path: the file (or folder) being written.
        needed: bytes the write needs, when known (reported for a full disk).
    """
    if isinstance(err, WriteError):
        return err
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in _SPACE_ERRNOS:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
        need = f", {_size(needed)} needed" if needed else ""
        more = f"at least {_size(needed - free)} " if needed and needed > free else ""
        return WriteError(
            f"no space left to write {path.name} in {folder} ({_size(free)} free{need})",
            fix=f"free {more}space on that disk, or write to another folder",
        )
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WriteError(f"cannot write {path.name} in {folder}: {reason}", fix="choose a folder you can write to")
    if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return WriteError(
            f"cannot write {path}: {reason} (a file or folder is in the way)",
            fix="choose another output path or move what is in the way",
        )
    return WriteError(f"cannot write {path}: {reason}", fix="check the disk and the folder's permissions")


def atomic_write(
    path: PathLike, write: Callable[[Path], None], needed: Optional[int] = None, fsync: bool = False
) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (same directory, so the rename is atomic).

    Args:
        path: the final file.
        write: writes the whole content to the path it is given.
        needed: approximate size in bytes, named in the error when the disk is full.
        fsync: flush the file (and then its folder) to the disk, so that after a power cut the file is either
            the old one or the whole new one (checkpoints).

    Raises:
        WriteError: the folder cannot be created or written, or the disk is full; the previous file is intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise write_error(err, path, needed) from None
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates the file 0600 and some writers (safetensors) replace it with their own 0600 file;
        # give the result the permissions a plain open() would (0666 minus the umask), like every other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        if fsync:
            _fsync_path(tmp_path)
        os.replace(tmp_path, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException as err:
        full = _disk_full(err, path.parent, needed)
        tmp_path.unlink(missing_ok=True)
        if full and getattr(err, "errno", None) not in _SPACE_ERRNOS:
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if isinstance(err, OSError):
            raise write_error(err, path, needed) from None
        raise
    return path


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), needed=len(text.encode()))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data), needed=len(data))


def append_line(path: PathLike, line: str) -> None:
    """Append one line to a log file with a single ``write`` (O_APPEND), so a crash leaves at most one torn
    last line (readers skip it), never two records mixed.

    Raises:
        WriteError: the disk is full or the file cannot be written.
    """
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write: only on a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
    except OSError as err:
        raise write_error(err, path, len(data)) from None


def remove_stale_tmp(folder: PathLike, names: Iterable[str]) -> list[Path]:
    """Delete temporary files :func:`atomic_write` left for these target names when a process was killed
    mid-write (``.<name>.<random>.tmp<suffix>``). Returns the files removed."""
    folder = Path(folder)
    removed = []
    for name in names:
        suffix = Path(name).suffix
        for p in folder.glob(f".{name}.*{TMP_MARK}{suffix}"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def check_output_dir(path: PathLike, what: str = "output folder") -> Path:
    """Check, before any work is done, that ``path`` is a folder we can write in or can be created as one.

    Nothing is created: the folder's nearest existing ancestor must be a writable folder.

    Raises:
        WriteError: a file is in the way, or the folder (or where it would be created) is read-only or not ours.
    """
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise WriteError(f"{what} {path} {where}, not a folder", fix="give a folder path (it is created if needed)")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "permission denied"
        where = "" if existing == path else f" (cannot create it in {existing})"
        raise WriteError(f"{what} {path} cannot be written{where}: {reason}", fix="choose a folder you can write to")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_file(path: PathLike, what: str = "output file") -> Path:
    """Check, before any work is done, that ``path`` can be written as a file (not a folder, its folder
    writable or creatable).

    Raises:
        WriteError: naming the path.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder", fix="give a file path")
    try:
        check_output_dir(path.parent, what="folder")
    except WriteError as err:
        raise WriteError(f"{what} {path} cannot be written: {err.message}", fix=err.fix) from None
    return path


def check_distinct_targets(sources: Sequence[Path], target: Callable[[Path], Path]) -> None:
    """Refuse, before anything is written, inputs whose outputs would be the same file (``a/x.png`` and
    ``b/x.png`` into one folder), naming both.

    Raises:
        SIAError: naming the two inputs and the file.
    """
    seen: dict[Path, Path] = {}
    for source in sources:
        t = target(source)
        if t in seen:
            raise SIAError(
                f"{seen[t]} and {source} would both be written to {t}",
                fix="rename one of them, or write them to separate output folders",
            )
        seen[t] = source


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's content (hex)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
