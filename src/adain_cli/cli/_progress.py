"""Progress and reporting for every command: the one Rich progress set-up (`progress_bar`), the
one failure reporter (`report_failure`), and the live views built on them. Results go to stdout,
progress and failures to stderr; bars only on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .. import batch, install, jobs
from ..stylizer import Stylizer
from ._boundary import error_line

Say = Callable[[str], None]


def to_stderr(line: str) -> None:
    typer.echo(line, err=True)


def progress_bar(*columns: ProgressColumn, stderr: bool, transient: bool = True) -> Progress:
    """The one Rich progress set-up: the task's description and a bar, then what the run counts."""
    return Progress(TextColumn("{task.description}"), BarColumn(), *columns,
                    console=Console(stderr=stderr), transient=transient)


def printer(progress: Progress) -> Say:
    """Lines printed above a live bar, so they do not tear it; file names are not Rich markup."""
    return lambda line: progress.console.print(line, markup=False, highlight=False)


def report_failure(outcome: jobs.Outcome, debug: bool, say: Say = to_stderr) -> None:
    """The one failure reporter: a traceback under --debug, then one line naming the input and reason."""
    if debug and outcome.exception is not None:
        traceback.print_exception(outcome.exception)
    say(error_line(outcome.error or "failed"))


def outcome_reporter(as_json: bool, quiet: bool, debug: bool,
                     echo: Say = typer.echo) -> Callable[[jobs.Outcome], None]:
    """One line (or one JSON object) per output; failures on stderr."""
    def report(outcome: jobs.Outcome) -> None:
        if as_json:
            typer.echo(json.dumps(outcome.as_dict()))
        if outcome.status == "failed":
            report_failure(outcome, debug)
        elif not (as_json or quiet):
            if outcome.status == "written":
                echo(f"wrote {outcome.output} ({outcome.seconds:.2f} s)")
            else:
                echo(f"skipped {outcome.output}: exists (use --overwrite to replace)")
    return report


def run_reporting(stylizer: Stylizer, planned: list[batch.Job], settings: jobs.Settings, *, as_json: bool,
                  quiet: bool, debug: bool) -> list[jobs.Outcome]:
    """Run the jobs, reporting each outcome: a progress bar on a terminal, else plain lines or JSON."""
    if len(planned) < 2 or not sys.stdout.isatty() or as_json or quiet:
        return batch.run(stylizer, planned, settings, outcome_reporter(as_json, quiet, debug))
    with progress_bar(MofNCompleteColumn(), TimeRemainingColumn(), stderr=False) as progress:
        task = progress.add_task("stylizing", total=len(planned))
        report = outcome_reporter(as_json, quiet, debug, printer(progress))

        def on_outcome(outcome: jobs.Outcome) -> None:
            report(outcome)
            progress.advance(task)

        return batch.run(stylizer, planned, settings, on_outcome)


@contextmanager
def download_progress(quiet: bool) -> Iterator[install.FileProgress | None]:
    """Download progress on stderr (stdout stays clean for --json): a bar on a terminal."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        announced: set[str] = set()

        def announce(name: str, done: int, total: int | None) -> None:
            if name not in announced:
                announced.add(name)
                typer.echo(f"fetching {name} ...", err=True)

        yield announce
        return
    with progress_bar(DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), stderr=True) as progress:
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        yield update


class Counter:
    """Live progress of a long run on stderr (stdout holds only results): done, rate, failures
    and ETA; a bar on a terminal, else a plain line every 10 s (logs of batch jobs)."""

    INTERVAL = 10.0

    def __init__(self, progress: Progress | None, unit: str, prefix: str) -> None:
        self._progress = progress
        self._task = None if progress is None else progress.add_task(prefix + unit, total=None, rate="")
        self._unit, self._prefix = unit, prefix
        self._total: int | None = None
        self._done = self._failed = 0
        self._began = self._said = time.perf_counter()
        self.say: Say = to_stderr if progress is None else printer(progress)

    def start(self, total: int | None) -> None:
        """The count to reach, once known; the rate counts from here."""
        self._total = total
        self._began = self._said = time.perf_counter()
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def advance(self, count: int = 1, failed: int = 0) -> None:
        self._done += count
        self._failed += failed
        now = time.perf_counter()
        rate = f"{self._done / max(now - self._began, 1e-9):.2f} {self._unit}/s"
        if self._failed:
            rate += f", {self._failed} failed"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=count, rate=rate)
        elif now - self._said >= self.INTERVAL:
            self._said = now
            of = f"/{self._total}" if self._total else ""
            eta = ""
            if self._total and self._done:
                eta = f", {(self._total - self._done) * (now - self._began) / self._done / 60:.1f} min left"
            typer.echo(f"{self._prefix}{self._done}{of} {self._unit} ({rate}{eta})", err=True)


@contextmanager
def counting(unit: str, quiet: bool, prefix: str = "") -> Iterator[Counter | None]:
    """A Counter, None when quiet; the bar only where stderr is a terminal."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield Counter(None, unit, prefix)
        return
    with progress_bar(MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                      stderr=True) as progress:
        yield Counter(progress, unit, prefix)
