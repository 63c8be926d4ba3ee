"""The one exception family the core raises; the CLI turns each into an exit code."""

from __future__ import annotations

from pathlib import Path

# Exit codes, documented in the README. 1 (some inputs failed) is decided by the
# batch result, not by an exception.
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_WEIGHTS = 3
EXIT_DOWNLOAD = 4
EXIT_STORAGE = 5
EXIT_TRAINING = 6
EXIT_INTERRUPTED = 130


class AdainError(Exception):
    """Base of every error adain-cli raises on purpose. The message is one line for the user;
    `http_status` is what a server answers for it (web.py maps the family to JSON once, here)."""

    exit_code = EXIT_USAGE
    http_status = 500


class UsageError(AdainError):
    """Options or arguments that cannot work: nothing was attempted."""

    exit_code = EXIT_USAGE
    http_status = 400


class DeviceError(UsageError):
    """The requested device does not exist or is not available."""


class WeightsError(AdainError):
    """Weight files missing, unreadable or not in the public AdaIN layout."""

    exit_code = EXIT_WEIGHTS


class PathError(AdainError):
    """A problem with one file: the message is "PATH: reason"."""

    exit_code = EXIT_SOME_FAILED

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    @classmethod
    def cannot_write(cls, path: Path | str, exc: OSError) -> PathError:
        """The error for a failed write: the OS's reason without the path repeated."""
        return cls(path, f"cannot write ({exc.strerror or exc})")


class ImageError(PathError):
    """One input image cannot be used; a batch carries on with the others."""

    http_status = 400


class NotAnImage(ImageError):
    """The file is empty or in no format Pillow reads."""

    http_status = 415


class ImageTooLarge(ImageError):
    """More pixels than the limit allows: a possible decompression bomb."""

    http_status = 413


class OutputError(PathError):
    """One output cannot be written; nothing partial is left behind."""


class VideoError(PathError):
    """A video that cannot be read, or written, to the end; nothing partial is left."""


class DownloadError(AdainError):
    """A download failed for good (after retries where retrying made sense)."""

    exit_code = EXIT_DOWNLOAD

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class StorageError(PathError):
    """Weights could not be written where they belong (disk full, permission denied)."""

    exit_code = EXIT_STORAGE


class TrainingError(AdainError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""

    exit_code = EXIT_TRAINING


class RequestError(AdainError):
    """A request to `adain serve` that cannot be served, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = self.status = status


class Busy(RequestError):
    """503: the server cannot take this work now, but may in `retry_after` seconds."""

    def __init__(self, why: str, retry_after: int) -> None:
        super().__init__(503, f"busy: {why}, try again in {retry_after} s")
        self.retry_after = retry_after


class QueueFull(Busy):
    def __init__(self, retry_after: int) -> None:
        super().__init__("the queue is full", retry_after)
