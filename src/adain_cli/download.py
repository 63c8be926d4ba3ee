"""HTTP downloads that survive bad networks: retries with backoff, resume by Range request.

Knows nothing about weights: it fetches a URL into a file and reports progress.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import DownloadError, StorageError

CHUNK = 1 << 16
# Called with (bytes so far, total bytes or None when the server does not say).
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, the first wait, and the timeout of each socket operation."""

    attempts: int = 5
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    timeout: float = 30.0


DEFAULT_POLICY = RetryPolicy()


class _Retryable(Exception):
    """A failure worth another attempt (connection trouble, a 5xx, a dropped transfer)."""


class _RangeRejected(_Retryable):
    """The server refused to resume (416): the partial file is no prefix of the resource."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, socket.gaierror):
        return "host name lookup failed (DNS)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionError, http.client.IncompleteRead)):
        return "connection dropped"
    return str(exc) or type(exc).__name__


def fetch(url: str, part: Path, policy: RetryPolicy = DEFAULT_POLICY, progress: Progress | None = None) -> None:
    """Download `url` into `part`, continuing whatever `part` already holds.

    Connection errors, timeouts, 5xx answers and transfers cut short are retried with
    exponential backoff, each retry resuming with a Range request. Other HTTP errors
    (404, 403) fail at once. Raises DownloadError, or StorageError when writing fails.
    """
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        if attempt:
            time.sleep(policy.backoff * 2 ** (attempt - 1))
        try:
            _fetch_once(url, part, policy.timeout, progress)
            return
        except _Retryable as exc:
            last = exc.__cause__ or exc
    raise DownloadError(url, f"{_describe(last)} after {policy.attempts} attempts") from last


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": f"adain-cli/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            raise _RangeRejected() from exc
        if exc.code >= 500:
            raise _Retryable() from exc
        raise DownloadError(url, _describe(exc)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable() from exc


def _fetch_once(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except _RangeRejected:
        part.unlink(missing_ok=True)  # the next attempt starts from scratch
        raise
    with response:
        resumed = offset and response.status == 206
        if not resumed:
            offset = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        try:
            out = open(part, "ab" if resumed else "wb")  # noqa: SIM115 (closed below; open errors are ours)
        except OSError as exc:
            raise StorageError.cannot_write(part, exc) from exc
        with out:
            done = offset
            while chunk := _read(response):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise StorageError.cannot_write(part, exc) from exc
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise _Retryable() from http.client.IncompleteRead(b"", total - done)


def _read(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
        raise _Retryable() from exc
