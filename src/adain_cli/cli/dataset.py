"""`adain dataset`: a whole image dataset restyled, reproducibly, resumably, sharded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .. import dataset, images, jobs
from .. import style_bank as style_bank_module
from . import _options as opt
from ._boundary import error_boundary, warn
from ._model import load_stylizer
from ._progress import Counter, counting, report_failure, to_stderr


def dataset_command(
    content_dir: Annotated[Path, typer.Argument(
        metavar="CONTENT_DIR", help="Images to restyle, searched recursively; OUT mirrors this tree.")],
    style_dir: Annotated[Path, typer.Argument(
        metavar="STYLE_DIR", help="Paintings to draw from, searched recursively.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT", help="Output folder.")],
    styles_per_image: Annotated[int, typer.Option(
        "--styles-per-image", "-n", min=1, metavar="N",
        help="Outputs per content image, each in another style drawn at random. 1 keeps each image's "
             "path and name; more name them <stem>_stylized_<style>.<ext>.")] = 1,
    seed: Annotated[int, typer.Option(
        "--seed", help="Which styles and alphas each image gets depends only on this, its path and the styles."
    )] = 0,
    alpha_text: Annotated[str, typer.Option(
        "--alpha", "-a", metavar="A|A:B", help="Content-style trade-off: one value, or a range A:B for a "
                                               "uniform random alpha per output.")] = "1",
    ext: Annotated[str | None, typer.Option(
        "--ext", help="Output format (default: each output keeps its input's, JPEG stays JPEG).")] = None,
    quality: opt.Quality = images.DEFAULT_QUALITY,
    content_size: opt.ContentSize = 0,
    style_size: opt.StyleSize = 512,
    crop: opt.Crop = False,
    preserve_color: opt.PreserveColor = False,
    luminance_only: opt.LuminanceOnly = False,
    shard_text: Annotated[str | None, typer.Option(
        "--shard", metavar="I/N", help="Do shard I (from 0) of N. Default: from torchrun (RANK, WORLD_SIZE) "
                                       "or Slurm (srun tasks, job arrays), else everything.")] = None,
    style_bank: Annotated[str, typer.Option(
        "--style-bank", metavar="DIR|off",
        help="Where style statistics are kept for reuse by later runs and other processes "
             f"(default: {style_bank_module.default_location()}); off: keep none.")] = "",
    workers: Annotated[int, typer.Option(
        "--workers", min=0, metavar="N", help="Threads that decode and save images. 0: up to 8, by CPU count.")
    ] = 0,
    vgg: opt.VggPath = None,
    decoder: opt.DecoderPath = None,
    device_name: opt.Device = "auto",
    precision: opt.PrecisionOption = "fp32",
    batch_size: opt.PairsPerCall = 0,
    tile: opt.Tile = 0,
    max_memory: opt.MaxMemory = "auto",
    compile_: opt.Compile = False,
    offline: opt.Offline = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Make every output again (default: continue, keeping finished ones).")] = False,
    max_pixels: opt.MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: opt.JsonSummary = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Restyle a whole image dataset (Stylized-ImageNet): each image in random paintings, reproducibly,
    resumably, sharded over torchrun or Slurm."""
    with error_boundary(debug):
        low, high = dataset.parse_alpha(alpha_text)
        settings = opt.ImageOptions(alpha=low, content_size=content_size, style_size=style_size, crop=crop,
                                    preserve_color=preserve_color, luminance_only=luminance_only, quality=quality,
                                    max_pixels=max_pixels, overwrite=overwrite).settings()
        shard = dataset.Shard.parse(shard_text) if shard_text else dataset.Shard.from_environment()
        options = dataset.Options(styles_per_image, seed, (low, high),
                                  None if ext is None else jobs.check_extension(ext), shard)
        execution = opt.ExecutionOptions(device=shard.device_name(device_name), precision=precision, tile=tile,
                                         max_memory=max_memory, compile=compile_, batch_size=batch_size).resolve()
        prefix = f"[{shard.index}/{shard.count}] " if shard.count > 1 else ""
        plan = dataset.plan(content_dir, style_dir, output, options)
        for notice in plan.notices:
            if not quiet:
                typer.echo(f"adain: note: {prefix}{notice}", err=True)
        stylizer = load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        bank = dataset.open_style_bank(style_bank, stylizer, settings)
        with counting("images", quiet or as_json, prefix) as counter:
            result = dataset.run(stylizer, plan, settings, bank=bank, workers=workers or dataset.default_workers(),
                                 on_outcome=_reporter(counter, debug),
                                 on_start=None if counter is None else counter.start)
        if bank is not None and bank.problem:
            warn(bank.problem)
        if as_json:
            typer.echo(json.dumps(result.as_dict()))
        elif not quiet:
            resumed = f", {result.resumed} done before" if result.resumed else ""
            typer.echo(f"{prefix}{jobs.summary(result.outcomes)}{resumed}; manifest {plan.manifest}")
    raise typer.Exit(result.exit_code)


def _reporter(counter: Counter | None, debug: bool) -> Callable[[jobs.Outcome], None]:
    """Each outcome counted; each failure said on one line (its row in the manifest says it too)."""
    def report(outcome: jobs.Outcome) -> None:
        failed = outcome.status == "failed"
        if failed:
            report_failure(outcome, debug, to_stderr if counter is None else counter.say)
        if counter is not None:
            counter.advance(1, int(failed))
    return report
