"""The `adain` command line: parses options, calls the core, prints. No work happens here.

One module per command (stylize.py ... info.py); what they share is in the private modules:
`_options` (options declared once, and the objects they make), `_progress` (the progress bar and
the reporters), `_model` (the model, weights fetched on first use) and `_boundary` (the one
place errors become a line on stderr and an exit code). This module only assembles the app.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .. import __version__
from . import dataset, download, info, interpolate, serve, stylize, train, video
from ._boundary import OneLineErrors

app = typer.Typer(
    name="adain",
    cls=OneLineErrors,
    help="Arbitrary style transfer with Adaptive Instance Normalization (Huang & Belongie, 2017).",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"adain-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Repaint photos in the style of any painting."""


# In the order `adain --help` lists them.
app.command("stylize")(stylize.stylize)
app.command("interpolate")(interpolate.interpolate_command)
app.command("video")(video.video_command)
app.command("dataset")(dataset.dataset_command)
app.command("serve")(serve.serve_command)
app.command("train")(train.train)
app.command("download-weights")(download.download_weights)
app.command("info")(info.info)


def main() -> None:
    """Entry point of the `adain` console script."""
    try:
        app(prog_name="adain")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    # Every output is written, closed and reported by now. Skip the interpreter's teardown,
    # which spends about 0.4 s unloading torch after the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
