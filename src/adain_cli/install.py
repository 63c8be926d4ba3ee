"""Installing weights: fetch (or copy), verify, and only then move into place; verify again later.

A file is verified when its size and sha256 match the manifest where those are pinned,
and it loads with `weights_only=True` with exactly the public keys and shapes, float32,
all finite. The sha256 of what was installed is recorded in `installed.json` beside the
files, so `adain download-weights --verify` can tell if a file changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .atomic import atomic_write, sync_directory
from .download import DEFAULT_POLICY, RetryPolicy, fetch
from .errors import StorageError, WeightsError
from .weights import WeightSpec, manifest, read_state_dict, weights_dir

RECORD_FILE = "installed.json"
URL_ENV = "ADAIN_WEIGHTS_URL"
OFFLINE_ENV = "ADAIN_OFFLINE"
# Called with (file name, bytes so far, total bytes or None).
FileProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Installed:
    """One weights file after `install`: newly installed, or found present and verified."""

    name: str
    path: Path
    sha256: str
    size: int
    source: str
    action: Literal["installed", "present"]


@dataclass(frozen=True)
class Check:
    """The state of one weights file as `verify_installed` found it."""

    name: str
    path: Path
    ok: bool
    detail: str
    sha256: str | None = None


def offline_requested() -> bool:
    """ADAIN_OFFLINE set to anything but empty, 0, false or no."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def source_url(spec: WeightSpec) -> str:
    """Where a file is downloaded from: the mirror in ADAIN_WEIGHTS_URL if set, else the manifest URL."""
    mirror = os.environ.get(URL_ENV)
    return f"{mirror.rstrip('/')}/{spec.name}" if mirror else spec.url


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, spec: WeightSpec) -> str:
    """Check one file completely against its manifest entry; returns its sha256."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise WeightsError(f"{path}: {size} bytes, expected {spec.size}")
    digest = sha256_of(path)
    if spec.sha256 is not None and digest != spec.sha256:
        raise WeightsError(f"{path}: sha256 {digest} does not match the pinned {spec.sha256}")
    read_state_dict(path, spec.layout(), exact_dtype=torch.float32)
    return digest


def read_record(folder: Path) -> dict[str, dict[str, object]]:
    try:
        return json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_record(folder: Path, record: dict[str, dict[str, object]]) -> None:
    try:
        with atomic_write(folder / RECORD_FILE) as handle:
            handle.write(json.dumps(record, indent=2, sort_keys=True).encode("utf-8"))
    except OSError as exc:
        raise StorageError.cannot_write(folder / RECORD_FILE, exc) from exc


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One installer per weights directory at a time, across processes."""
    lock_path = folder / ".install.lock"
    try:
        handle = open(lock_path, "a+b")  # noqa: SIM115 (held for the whole block)
    except OSError as exc:
        raise StorageError.cannot_write(lock_path, exc) from exc
    with handle:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s; keep waiting
                    continue
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # the lock goes with the file handle


def _fetch_into(part: Path, spec: WeightSpec, local_dir: Path | None, policy: RetryPolicy,
                progress: FileProgress | None) -> str:
    """Bring one file to `part`; returns where it came from."""
    report = None if progress is None else (lambda done, total: progress(spec.name, done, total))
    if local_dir is None:
        url = source_url(spec)
        fetch(url, part, policy, report)
        return url
    source = local_dir / spec.name
    if not source.is_file():
        raise WeightsError(f"{source}: not found (--from needs {', '.join(s.name for s in manifest())})")
    try:
        shutil.copyfile(source, part)
    except OSError as exc:
        raise StorageError.cannot_write(part, exc) from exc
    if report is not None:
        report(part.stat().st_size, part.stat().st_size)
    return str(source)


def _install_one(spec: WeightSpec, folder: Path, local_dir: Path | None, policy: RetryPolicy,
                 progress: FileProgress | None) -> Installed:
    # The partial file keeps its name between runs so an interrupted download resumes.
    part = folder / f".{spec.name}.part"
    if local_dir is not None:
        part.unlink(missing_ok=True)
    source = _fetch_into(part, spec, local_dir, policy, progress)
    try:
        digest = verify(part, spec)
    except WeightsError as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{spec.name} from {source} failed verification, nothing installed: {exc}") from exc
    final = folder / spec.name
    try:
        os.replace(part, final)
        sync_directory(folder)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise StorageError.cannot_write(final, exc) from exc
    return Installed(spec.name, final, digest, final.stat().st_size, source, "installed")


def _present(spec: WeightSpec, folder: Path) -> Installed | None:
    """The file already in place, if it verifies."""
    final = folder / spec.name
    if not final.is_file():
        return None
    try:
        digest = verify(final, spec)
    except WeightsError:
        return None  # damaged: install again; the damaged file is replaced only by a verified one
    return Installed(spec.name, final, digest, final.stat().st_size, str(final), "present")


def install(
    dest: Path | None = None,
    *,
    names: list[str] | None = None,
    force: bool = False,
    local_dir: Path | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: FileProgress | None = None,
) -> list[Installed]:
    """Install the manifest's files (or `names`) into `dest` (default: the weights directory).

    Files already present and verified are kept unless `force`. Downloads come from the
    manifest URLs, the ADAIN_WEIGHTS_URL mirror, or `local_dir` (offline installs). A
    file that fails verification never replaces what is there.
    """
    folder = dest if dest is not None else weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(folder, f"cannot create the weights directory ({exc.strerror or exc})") from exc
    specs = [s for s in manifest() if names is None or s.name in names]
    results = []
    with _exclusive(folder):
        record = read_record(folder)
        for spec in specs:
            found = None if force else _present(spec, folder)
            result = found or _install_one(spec, folder, local_dir, policy, progress)
            if result.action == "installed" or record.get(spec.name, {}).get("sha256") != result.sha256:
                record[spec.name] = {"sha256": result.sha256, "size": result.size, "source": result.source,
                                     "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                _write_record(folder, record)
            results.append(result)
    return results


def verify_installed(dest: Path | None = None) -> list[Check]:
    """Check each installed file against the sha256 recorded at install time and the manifest."""
    folder = dest if dest is not None else weights_dir()
    record = read_record(folder)
    checks = []
    for spec in manifest():
        path = folder / spec.name
        recorded = record.get(spec.name, {}).get("sha256")
        if not path.is_file():
            checks.append(Check(spec.name, path, False, "missing: run `adain download-weights`"))
            continue
        digest = sha256_of(path)
        if recorded is None:
            detail = "no install record: run `adain download-weights` to verify and record it"
            checks.append(Check(spec.name, path, False, detail, digest))
        elif digest != recorded:
            detail = (f"sha256 {digest} differs from {recorded} recorded at install: the file has changed "
                      "(run `adain download-weights --force`)")
            checks.append(Check(spec.name, path, False, detail, digest))
        else:
            try:
                verify(path, spec)
                checks.append(Check(spec.name, path, True, "verified", digest))
            except WeightsError as exc:
                checks.append(Check(spec.name, path, False, str(exc), digest))
    return checks


def ensure(names: list[str], *, offline: bool, progress: FileProgress | None = None) -> None:
    """Make sure the named files are in the weights directory, downloading them unless offline."""
    missing = [name for name in names if not (weights_dir() / name).is_file()]
    if not missing:
        return
    if offline:
        raise WeightsError(f"{' and '.join(missing)} not found in {weights_dir()} and offline mode is on: "
                           "run `adain download-weights` (or `adain download-weights --from DIR`)")
    install(names=missing, progress=progress)
