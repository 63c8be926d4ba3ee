"""Turning CONTENT and STYLE arguments (a file, a directory or a quoted glob) into image paths."""

from __future__ import annotations

import glob
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

