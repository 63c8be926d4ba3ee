"""Writing a file so that readers see the old version or the complete new one, never a part."""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")


def temporary_for(path: Path) -> Path:
    """A fresh hidden name beside `path` for what becomes `path` when complete: a file or a
    folder. Every temporary adain-cli makes is named so, and `remove_stale_temporaries` knows
    them by it; the name ends in ".tmp", so no search for images, videos or frames takes it
    for an output."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"  # _TEMPORARY matches it


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Yield a handle to a temp file beside `path`; on success it is synced and renamed over `path`.

    On any exception (Ctrl-C included) the temp file is removed and `path` is untouched.
    After the rename the directory is synced too: the rename is an entry in the directory,
    and a power cut before that entry reaches the disk would lose it.
    The temp file is created with the usual umask-based permissions (unlike mkstemp's 0600).
    """
    tmp = temporary_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(folder: Path) -> None:
    """Make the entries of `folder` (a rename into it, say) durable. Windows has no directory
    handles to sync, and its renames are journaled: nothing to do there."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync a directory
            raise
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path, names: Collection[str]) -> int:
    """Delete the temporaries (files, and folders of video frames) that writes of `names` in
    `folder` left behind when their process was killed (SIGKILL, a power cut): only ours, and
    only for those names, so that another process's writes in progress, which are of other
    names, are left alone. Returns how many were removed."""
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _TEMPORARY.match(entry.name)
                if match and match["name"] in names:
                    removed += _remove(Path(entry.path), entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        pass
    return removed


def _remove(path: Path, is_folder: bool) -> bool:
    """Best effort: a temporary we may not delete (another user's, in a shared folder) stays,
    and the write that finds it goes on under a name of its own."""
    try:
        if is_folder:
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return True
