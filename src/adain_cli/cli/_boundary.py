"""Where every error ends: one line, `adain: error: ...`, on stderr, and a documented exit code."""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import typer
from typer.core import TyperGroup

try:  # Typer vendors Click since 0.2x; before, Click was a package of its own
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover (older Typer)
    from click import exceptions as click_errors  # type: ignore[no-redef]

from ..errors import EXIT_INTERRUPTED, AdainError

# Click 8.2 raises this for a command given no arguments when it should show its help.
_NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())
# Click (not Typer's vendored copy) turns Ctrl-C at a prompt into Abort.
_ABORT = getattr(click_errors, "Abort", ())


def error_line(message: str) -> str:
    return f"adain: error: {message}"


def say_error(message: str) -> None:
    typer.echo(error_line(message), err=True)


def warn(message: str) -> None:
    typer.echo(f"adain: warning: {message}", err=True)


class OneLineErrors(TyperGroup):
    """Usage errors Typer finds itself (a missing option, a value out of range) as one line,
    `adain: error: ...` with exit code 2, like every other error: no Usage/Try block."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:
            exc.show()  # `adain` alone: the help
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            message = exc.format_message().strip().rstrip(".")
            context = getattr(exc, "ctx", None)
            if context is not None:
                message += f"; see '{context.command_path} --help'"
            say_error(message)
            sys.exit(exc.exit_code)
        except _ABORT:
            say_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@contextmanager
def error_boundary(debug: bool, sigterm: bool = True) -> Iterator[None]:
    """The one place core errors become a message on stderr and an exit code. SIGTERM stops
    a command as Ctrl-C does, unless `sigterm` is False (`serve`, which ends on it with 0)."""
    try:
        with interrupt_on_sigterm() if sigterm else nullcontext():
            yield
    except AdainError as exc:
        if debug:
            traceback.print_exc()
        say_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        say_error("interrupted; finished outputs are kept, nothing partial was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a long run as Ctrl-C does (the boundary above then reports it): nothing
    partial is left behind."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
