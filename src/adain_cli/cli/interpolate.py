"""`adain interpolate`: one content in a blend of several styles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import images, interpolate, jobs, mixing
from . import _options as opt
from ._boundary import error_boundary
from ._model import load_stylizer
from ._progress import outcome_reporter


def interpolate_command(
    content: Annotated[Path, typer.Argument(metavar="CONTENT", help="Content image file.")],
    styles: Annotated[list[Path], typer.Argument(metavar="STYLE...", help="Two or more style images.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Output file (a blend, or a contact sheet), or a directory for numbered frames.")],
    weights_text: Annotated[str | None, typer.Option(
        "--weights", "-w", metavar="W1,W2,...",
        help="Style weights, non-negative, normalised to sum 1 (default: equal).")] = None,
    steps: Annotated[int, typer.Option("--steps", min=0, metavar="N",
                                       help="Two styles: the N-step transition from the first to the second.")] = 0,
    grid: Annotated[int, typer.Option("--grid", min=0, metavar="N",
                                      help="Four styles: the NxN bilinear grid with the styles at the corners.")] = 0,
    alpha_sweep: Annotated[int, typer.Option("--alpha-sweep", min=0, metavar="N",
                                             help="N outputs with alpha from 0 to 1.")] = 0,
    mask: Annotated[Path | None, typer.Option(
        "--mask", metavar="PATH",
        help="Spatial control: style 1 where the mask is white, style 2 elsewhere; or a palette PNG with one "
             "region per style.")] = None,
    labels: Annotated[bool, typer.Option("--labels", help="Caption each cell of a contact sheet.")] = False,
    alpha: opt.Alpha = 1.0,
    content_size: opt.ContentSize = 512,
    style_size: opt.StyleSize = 512,
    work_size: opt.WorkSize = 0,
    crop: opt.Crop = False,
    preserve_color: opt.PreserveColor = False,
    luminance_only: opt.LuminanceOnly = False,
    ext: Annotated[str, typer.Option("--ext", help="Frame format when writing frames to a directory.")] = "png",
    quality: opt.Quality = images.DEFAULT_QUALITY,
    vgg: opt.VggPath = None,
    decoder: opt.DecoderPath = None,
    device_name: opt.Device = "auto",
    precision: opt.PrecisionOption = "fp32",
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
    """Stylize CONTENT in a blend of several styles: weighted mixes, transitions, grids, alpha sweeps, masks."""
    with error_boundary(debug):
        settings = opt.ImageOptions(alpha=alpha, content_size=content_size, style_size=style_size, crop=crop,
                                    preserve_color=preserve_color, luminance_only=luminance_only, quality=quality,
                                    max_pixels=max_pixels, overwrite=overwrite, work_size=work_size).settings()
        execution = opt.ExecutionOptions(device=device_name, precision=precision, tile=tile, max_memory=max_memory,
                                         compile=compile_).resolve()
        job = interpolate.plan(content, styles, output, weights=mixing.parse_weights(weights_text), steps=steps,
                               grid=grid, alpha_sweep=alpha_sweep, alpha=alpha, mask=mask, labels=labels, ext=ext)
        settings.check_work_sizes([job.content])
        stylizer = load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        outcomes = interpolate.run(stylizer, job, settings, outcome_reporter(as_json, quiet, debug))
    raise typer.Exit(jobs.exit_code(outcomes))
