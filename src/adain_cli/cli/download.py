"""`adain download-weights`: the pretrained weights installed, verified, or only checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import install
from ..download import RetryPolicy
from ..errors import EXIT_WEIGHTS
from . import _options as opt
from ._boundary import error_boundary, say_error
from ._progress import download_progress


def download_weights(
    dest: Annotated[Path | None, typer.Option(
        "--dest", metavar="DIR", help="Install here instead of the weights directory.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if good weights are present.")] = False,
    from_dir: Annotated[Path | None, typer.Option(
        "--from", metavar="DIR", help="Install from local copies of the files (no network).")] = None,
    verify_only: Annotated[bool, typer.Option(
        "--verify", help="Check the installed files against their recorded sha256 and the manifest; change nothing.")
    ] = False,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries after a failed attempt.")] = 4,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS",
                                           help="Give up on a silent connection after this long.")] = 30.0,
    as_json: opt.Json = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Install the pretrained weights (verified) into the weights directory, or --verify them."""
    with error_boundary(debug):
        if verify_only:
            checks = install.verify_installed(dest)
            for check in checks:
                _report_check(check, as_json, quiet)
            raise typer.Exit(0 if all(c.ok for c in checks) else EXIT_WEIGHTS)
        policy = RetryPolicy(attempts=retries + 1, timeout=timeout)
        with download_progress(quiet or as_json) as progress:
            results = install.install(dest, force=force, local_dir=from_dir, policy=policy, progress=progress)
        for result in results:
            if as_json:
                typer.echo(json.dumps({"name": result.name, "path": str(result.path), "status": result.action,
                                       "sha256": result.sha256, "size": result.size, "source": result.source}))
            elif not quiet:
                what = "installed from " + result.source if result.action == "installed" else "already installed"
                typer.echo(f"{result.name}: {what}, verified ({result.size:,} bytes, sha256 {result.sha256})")


def _report_check(check: install.Check, as_json: bool, quiet: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"name": check.name, "path": str(check.path), "ok": check.ok,
                               "detail": check.detail, "sha256": check.sha256}))
    if not check.ok:
        say_error(f"{check.path}: {check.detail}")
    elif not (as_json or quiet):
        typer.echo(f"{check.name}: verified (sha256 {check.sha256})")
