"""`adain stylize`: every combination of contents and styles, one output each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import batch, images, jobs
from ..inputs import expand
from . import _options as opt
from ._boundary import error_boundary
from ._model import load_stylizer
from ._progress import run_reporting


def stylize(
    content: Annotated[str, typer.Argument(metavar="CONTENT", help="Content image: a file, a directory or a glob.")],
    style: Annotated[str, typer.Argument(metavar="STYLE", help="Style image: a file, a directory or a glob.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Output file for one pair; output directory for several.")],
    alpha: opt.Alpha = 1.0,
    content_size: opt.ContentSize = 512,
    style_size: opt.StyleSize = 512,
    work_size: opt.WorkSize = 0,
    crop: opt.Crop = False,
    preserve_color: opt.PreserveColor = False,
    luminance_only: opt.LuminanceOnly = False,
    ext: Annotated[str, typer.Option("--ext", help="Output format in directory mode.")] = "png",
    quality: opt.Quality = images.DEFAULT_QUALITY,
    vgg: opt.VggPath = None,
    decoder: opt.DecoderPath = None,
    device_name: opt.Device = "auto",
    precision: opt.PrecisionOption = "fp32",
    batch_size: opt.PairsPerCall = 0,
    tile: opt.Tile = 0,
    max_memory: opt.MaxMemory = "auto",
    compile_: opt.Compile = False,
    offline: opt.Offline = False,
    overwrite: opt.Overwrite = False,
    max_pixels: opt.MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: opt.Json = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Stylize CONTENT in the style of STYLE; with several of either, every combination."""
    with error_boundary(debug):
        settings = opt.ImageOptions(alpha=alpha, content_size=content_size, style_size=style_size, crop=crop,
                                    preserve_color=preserve_color, luminance_only=luminance_only, quality=quality,
                                    max_pixels=max_pixels, overwrite=overwrite, work_size=work_size).settings()
        execution = opt.ExecutionOptions(device=device_name, precision=precision, tile=tile, max_memory=max_memory,
                                         compile=compile_, batch_size=batch_size).resolve()
        planned = batch.plan(expand(content), expand(style), output, ext)
        settings.check_work_sizes(job.content for job in planned)
        stylizer = load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        outcomes = run_reporting(stylizer, planned, settings, as_json=as_json, quiet=quiet, debug=debug)
        if len(planned) > 1 and not (as_json or quiet):
            typer.echo(jobs.summary(outcomes))
    raise typer.Exit(jobs.exit_code(outcomes))
