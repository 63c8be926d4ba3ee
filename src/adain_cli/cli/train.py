"""`adain train`: a decoder trained on content and style folders."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import MofNCompleteColumn, TextColumn, TimeRemainingColumn

from .. import weights
from ..errors import EXIT_INTERRUPTED
from . import _options as opt
from ._boundary import error_boundary, say_error
from ._progress import download_progress, progress_bar

if TYPE_CHECKING:
    from .. import training


def train(
    content_dir: Annotated[Path, typer.Option("--coco", "--content-dir", metavar="DIR",
                                              help="Content images (MS-COCO), searched recursively.")],
    style_dir: Annotated[Path, typer.Option("--wikiart", "--style-dir", metavar="DIR",
                                            help="Style images (WikiArt), searched recursively.")],
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR",
                                             help="Run directory (default: runs/<timestamp>).")] = None,
    iterations: Annotated[int, typer.Option("--iterations", min=1)] = 160_000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Per process.")] = 8,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = 1e-4,
    lr_decay: Annotated[float, typer.Option("--lr-decay", min=0.0, help="lr / (1 + decay * iteration).")] = 5e-5,
    content_weight: Annotated[float, typer.Option("--content-weight", min=0.0)] = 1.0,
    style_weight: Annotated[float, typer.Option("--style-weight", min=0.0, help="The paper's lambda.")] = 10.0,
    image_size: Annotated[int, typer.Option("--image-size", min=8, help="Shorter side after resizing.")] = 512,
    crop_size: Annotated[int, typer.Option("--crop-size", min=8, help="Random square crop, a multiple of 8.")] = 256,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data loader processes per stream.")] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", min=1, metavar="N")] = 10_000,
    preview_every: Annotated[int, typer.Option("--preview-every", min=1, metavar="N")] = 1_000,
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16, or fp16 (with loss scaling).")] = "fp32",
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="PATH", help="A checkpoint, a run directory, or 'latest' (the one in --out).")] = None,
    vgg: opt.VggPath = None,
    device_name: opt.Device = "auto",
    offline: opt.Offline = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Train a decoder on content and style folders (the paper's recipe by default)."""
    from .. import training  # only here: it brings torch.distributed and the data loaders

    with error_boundary(debug):
        run_out = training.run_directory(out, resume)
        with download_progress(quiet) as progress:
            vgg = training.encoder_file(vgg, offline=offline, progress=progress)
        config = training.TrainConfig(
            content_dir=str(content_dir), style_dir=str(style_dir), out=str(run_out), vgg=str(vgg),
            iterations=iterations,
            batch_size=batch_size, lr=lr, lr_decay=lr_decay, content_weight=content_weight,
            style_weight=style_weight, image_size=image_size, crop_size=crop_size, workers=workers, seed=seed,
            save_every=save_every, preview_every=preview_every, precision=precision, device=device_name,
        )
        quiet = quiet or not training.is_main_process()
        with _stop_on_signals() as stop, _training_progress(config, quiet) as on_step:
            last = training.train(config, resume=resume, stop=stop, on_step=on_step)
        if stop.is_set():
            say_error(f"stopped at iteration {last}; checkpoint saved in {config.out} "
                      f"(continue with --out {config.out} --resume latest)")
            raise typer.Exit(EXIT_INTERRUPTED)
        if not quiet:
            typer.echo(f"trained {last} iterations; decoder in {Path(config.out) / weights.DECODER_FILE}")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM ask the run to stop (it saves a checkpoint first); a second one ends the
    process at once. The previous handlers are back afterwards, for in-process callers."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _training_progress(config: training.TrainConfig, quiet: bool) -> Iterator[Callable[[training.Step], None] | None]:
    """A live line (iteration, losses, it/s, ETA) on a terminal; a plain line every 50 iterations otherwise."""
    if quiet:
        yield None
        return
    if not sys.stdout.isatty():
        def plain(step: training.Step) -> None:
            if step.iteration % 50 == 0 or step.iteration == config.iterations:
                typer.echo(f"iteration {step.iteration}/{config.iterations}: content {step.loss_content:.4f}, "
                           f"style {step.loss_style:.4f}, lr {step.lr:.2e}, skipped files {step.skipped}")
        yield plain
        return
    columns = (MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
               TextColumn("{task.fields[losses]}"))
    with progress_bar(*columns, stderr=False, transient=False) as progress:
        task = progress.add_task("training", total=config.iterations, rate="", losses="")
        first: list[tuple[int, float]] = []

        def live(step: training.Step) -> None:
            if not first:
                first.append((step.iteration, step.seconds))
            done, began = first[0]
            rate = (step.iteration - done) / (step.seconds - began) if step.seconds > began else 0.0
            progress.update(task, completed=step.iteration, rate=f"{rate:.2f} it/s",
                            losses=f"content {step.loss_content:.3f} style {step.loss_style:.3f}")

        yield live
