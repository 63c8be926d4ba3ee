"""Turning CONTENT and STYLE arguments (a file, a directory or a quoted glob) into image paths,
and walking whole image trees (`adain dataset`)."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .images import IMAGE_SUFFIXES

_GLOB_CHARS = frozenset("*?[")


def _is_image_name(path: Path) -> bool:
    # Hidden files are skipped: macOS "._photo.jpg" resource forks are not images.
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def expand(spec: str | Path) -> list[Path]:
    """The image files an argument names, sorted; UsageError when it names none.

    A file is taken as given (whatever its extension: decoding decides); a directory
    gives its images (not recursive, hidden files skipped); a glob gives the image files
    it matches.
    """
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and _is_image_name(p))
        if not found:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise UsageError(f"{spec}: directory has no images (looked for {suffixes})")
        return found
    if path.exists():
        return [path]
    if _GLOB_CHARS & set(str(spec)):
        matches = sorted(Path(m) for m in glob.glob(str(spec), recursive=True))
        found = [p for p in matches if p.is_file() and _is_image_name(p)]
        if not found:
            raise UsageError(f"{spec}: pattern matches no image files")
        return found
    raise UsageError(f"{spec}: no such file or directory")



def walk_images(root: Path, on_unreadable: Callable[[Path, OSError], None] | None = None) -> list[str]:
    """Every image under `root`, recursively, as sorted relative POSIX paths ("cls/img.jpg").

    Hidden files and folders are skipped. Symbolic links are followed, but a folder already
    visited (a link loop, or two links to one place) is not entered again. A broken link
    with an image's name is listed, so that its failure is recorded rather than lost.
    Folders that cannot be read are passed to `on_unreadable` and left out.
    """
    found: list[str] = []
    visited: set[tuple[int, int]] = set()

    def visit(folder: Path, prefix: str) -> None:
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in visited:
                return
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            if on_unreadable is not None:
                on_unreadable(folder, exc)
            return
        for entry in children:
            if entry.name.startswith("."):
                continue
            if _is_folder(entry):
                visit(Path(entry.path), f"{prefix}{entry.name}/")
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(prefix + entry.name)

    visit(root, "")
    return sorted(found)


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows links; a broken link is not a folder
    except OSError:
        return False
