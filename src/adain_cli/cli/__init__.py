"""The `adain` command line: parses options, calls the core, prints. No work happens here."""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from typer.core import TyperGroup

try:  # Typer vendors Click since 0.2x; before, Click was a package of its own
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover (older Typer)
    from click import exceptions as click_errors  # type: ignore[no-redef]

from . import (
    __version__,
    batch,
    color,
    dataset,
    device,
    images,
    install,
    interpolate,
    jobs,
    memory,
    serve,
    steady,
    weights,
)
from . import style_bank as style_bank_module
from .download import RetryPolicy
from .errors import EXIT_INTERRUPTED, EXIT_WEIGHTS, AdainError, UsageError
from .execution import Execution
from .inputs import expand
from .stylizer import Stylizer

if TYPE_CHECKING:
    from . import training, video


def _say_error(message: str) -> None:
    typer.echo(f"adain: error: {message}", err=True)


# Click 8.2 raises this for a command given no arguments when it should show its help.
_NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())
# Click (not Typer's vendored copy) turns Ctrl-C at a prompt into Abort.
_ABORT = getattr(click_errors, "Abort", ())


class _OneLineErrors(TyperGroup):
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
            _say_error(message)
            sys.exit(exc.exit_code)
        except _ABORT:
            _say_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="adain",
    cls=_OneLineErrors,
    help="Arbitrary style transfer with Adaptive Instance Normalization (Huang & Belongie, 2017).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@contextmanager
def _error_boundary(debug: bool) -> Iterator[None]:
    """The one place core errors become a message on stderr and an exit code."""
    try:
        yield
    except AdainError as exc:
        if debug:
            traceback.print_exc()
        _say_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _say_error("interrupted; finished outputs are kept, nothing partial was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None


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


# Options shared by the commands that stylize, declared once.
Alpha = Annotated[float, typer.Option(
    "--alpha", "-a", min=0.0, max=1.0,
    help="Content-style trade-off: 0 reproduces the content, 1 is full style.")]
ContentSize = Annotated[int, typer.Option(
    "--content-size", min=0, metavar="PX",
    help=f"Resize content so its shorter side is PX (0 keeps the original; at least {images.MIN_SIDE}).")]
StyleSize = Annotated[int, typer.Option(
    "--style-size", min=0, metavar="PX",
    help="Resize styles so their shorter side is PX (0 keeps the original).")]
Crop = Annotated[bool, typer.Option("--crop", help="Centre-crop content and styles to squares after resizing.")]
PreserveColor = Annotated[bool, typer.Option(
    "--preserve-color",
    help="Keep the content's colours: recolour the style towards the content first (CORAL, "
         "as the reference implementation).")]
LuminanceOnly = Annotated[bool, typer.Option(
    "--luminance-only",
    help="Keep the content's colours: transfer only luminance, keep the content's chroma "
         "(Gatys et al. 2016).")]
VggPath = Annotated[Path | None, typer.Option(
    "--vgg", metavar="PATH", help="Encoder weights (vgg_normalised.pth); default: the weights directory.")]
DecoderPath = Annotated[Path | None, typer.Option(
    "--decoder", metavar="PATH", help="Decoder weights (decoder.pth); default: the weights directory.")]
Device = Annotated[str, typer.Option(
    "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")]
Tile = Annotated[int, typer.Option(
    "--tile", min=0, metavar="PX",
    help="Run the network in tiles of PX px (a multiple of 8) to bound memory on huge images; same result. "
         "0: no tiling.")]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", metavar="fp32|bf16|fp16",
    help="Network precision: fp32 (exact), bf16 (CPUs with AVX-512 BF16/AMX, recent GPUs: about 1.7x faster), "
         "fp16 (GPUs). Statistics and AdaIN stay fp32.")]
MaxMemory = Annotated[str, typer.Option(
    "--max-memory", metavar="SIZE",
    help="Memory budget such as 1.5G or 800M (RAM on CPU, VRAM on GPU): images whose pass would exceed it "
         "run tiled, same result. auto: what is in use plus half of what is free.")]
PairsPerCall = Annotated[int, typer.Option(
    "--batch-size", min=0, metavar="N",
    help="Pairs decoded per network call (contents of one size). 0: 8 on CUDA, else 1.")]
Compile = Annotated[bool, typer.Option(
    "--compile", help="Run the networks through torch.compile: faster per image after a slow first one.")]
Offline = Annotated[bool, typer.Option(
    "--offline", help="Never download: fail if weights are missing (also env ADAIN_OFFLINE=1).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them).")]
MaxPixels = Annotated[int, typer.Option(
    "--max-pixels", min=0, metavar="N",
    help="Refuse images with more than N pixels (decompression-bomb guard); 0 allows any size.")]
Quality = Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality.")]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per output on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (and --json objects).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks with errors.")]


def _settings(alpha: float, content_size: int, style_size: int, crop: bool, preserve_color: bool,
              luminance_only: bool, quality: int, max_pixels: int, overwrite: bool) -> jobs.Settings:
    """What the shared stylizing options turn into."""
    return jobs.Settings(alpha=alpha, content_size=content_size, style_size=style_size, crop=crop,
                         color_mode=color.mode_from_flags(preserve_color, luminance_only),
                         max_pixels=max_pixels or None, quality=quality, overwrite=overwrite)


def _execution(device_name: str, precision: str, tile: int, max_memory: str, compile_: bool,
               batch_size: int = 0) -> Execution:
    """The execution options, resolved and checked once; a GPU that is there but unusable is said once."""
    execution = Execution.resolve(device_name, precision, tile=tile or None,  # type: ignore[arg-type]
                                  max_memory=max_memory, batch_size=batch_size, compile=compile_)
    if device_name == "auto" and execution.device.type == "cpu":
        problem = device.unusable_gpu()
        if problem is not None:
            typer.echo(f"adain: warning: {problem}; running on the CPU", err=True)
    return execution


def _reporter(as_json: bool, quiet: bool, debug: bool,
              echo: Callable[[str], None] = typer.echo) -> Callable[[jobs.Outcome], None]:
    """One line (or one JSON object) per output; failures on stderr, with a traceback under --debug."""
    def report(outcome: jobs.Outcome) -> None:
        if as_json:
            typer.echo(json.dumps(outcome.as_dict()))
        if outcome.status == "failed":
            if debug and outcome.exception is not None:
                traceback.print_exception(outcome.exception)
            _say_error(outcome.error or "failed")
        elif not (as_json or quiet):
            if outcome.status == "written":
                echo(f"wrote {outcome.output} ({outcome.seconds:.2f} s)")
            else:
                echo(f"skipped {outcome.output}: exists (use --overwrite to replace)")
    return report


def _run_reporting(stylizer: Stylizer, planned: list[batch.Job], settings: jobs.Settings, *, as_json: bool,
                   quiet: bool, debug: bool) -> list[jobs.Outcome]:
    """Run the jobs, reporting each outcome: a progress bar on a terminal, else plain lines or JSON."""
    if len(planned) < 2 or not sys.stdout.isatty() or as_json or quiet:
        return batch.run(stylizer, planned, settings, _reporter(as_json, quiet, debug))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(), transient=True) as progress:
        task = progress.add_task("stylizing", total=len(planned))

        def echo(line: str) -> None:
            progress.console.print(line, markup=False)  # file names are not rich markup

        report = _reporter(as_json, quiet, debug, echo)

        def on_outcome(outcome: jobs.Outcome) -> None:
            report(outcome)
            progress.advance(task)

        return batch.run(stylizer, planned, settings, on_outcome)


@contextmanager
def _download_progress(quiet: bool) -> Iterator[install.FileProgress | None]:
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
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        yield update


def _load_stylizer(vgg: Path | None, decoder: Path | None, execution: Execution, *, offline: bool,
                   quiet: bool) -> Stylizer:
    """The model for a command, missing default weights fetched on first use."""
    needed = [name for name, given in ((weights.VGG_FILE, vgg), (weights.DECODER_FILE, decoder)) if given is None]
    with _download_progress(quiet) as progress:
        install.ensure(needed, offline=offline or install.offline_requested(), progress=progress)
    return Stylizer.from_files(vgg, decoder, execution=execution)


@app.command()
def stylize(
    content: Annotated[str, typer.Argument(metavar="CONTENT", help="Content image: a file, a directory or a glob.")],
    style: Annotated[str, typer.Argument(metavar="STYLE", help="Style image: a file, a directory or a glob.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Output file for one pair; output directory for several.")],
    alpha: Alpha = 1.0,
    content_size: ContentSize = 512,
    style_size: StyleSize = 512,
    crop: Crop = False,
    preserve_color: PreserveColor = False,
    luminance_only: LuminanceOnly = False,
    ext: Annotated[str, typer.Option("--ext", help="Output format in directory mode.")] = "png",
    quality: Quality = images.DEFAULT_QUALITY,
    vgg: VggPath = None,
    decoder: DecoderPath = None,
    device_name: Device = "auto",
    precision: PrecisionOption = "fp32",
    batch_size: PairsPerCall = 0,
    tile: Tile = 0,
    max_memory: MaxMemory = "auto",
    compile_: Compile = False,
    offline: Offline = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Stylize CONTENT in the style of STYLE; with several of either, every combination."""
    with _error_boundary(debug):
        settings = _settings(alpha, content_size, style_size, crop, preserve_color, luminance_only, quality,
                             max_pixels, overwrite)
        execution = _execution(device_name, precision, tile, max_memory, compile_, batch_size)
        planned = batch.plan(expand(content), expand(style), output, ext)
        stylizer = _load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        outcomes = _run_reporting(stylizer, planned, settings, as_json=as_json, quiet=quiet, debug=debug)
        if len(planned) > 1 and not (as_json or quiet):
            typer.echo(jobs.summary(outcomes))
    raise typer.Exit(jobs.exit_code(outcomes))


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights: expected comma-separated numbers such as 0.5,0.3,0.2, got {text!r}") from None


@app.command("interpolate")
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
    alpha: Alpha = 1.0,
    content_size: ContentSize = 512,
    style_size: StyleSize = 512,
    crop: Crop = False,
    preserve_color: PreserveColor = False,
    luminance_only: LuminanceOnly = False,
    ext: Annotated[str, typer.Option("--ext", help="Frame format when writing frames to a directory.")] = "png",
    quality: Quality = images.DEFAULT_QUALITY,
    vgg: VggPath = None,
    decoder: DecoderPath = None,
    device_name: Device = "auto",
    precision: PrecisionOption = "fp32",
    tile: Tile = 0,
    max_memory: MaxMemory = "auto",
    compile_: Compile = False,
    offline: Offline = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Stylize CONTENT in a blend of several styles: weighted mixes, transitions, grids, alpha sweeps, masks."""
    with _error_boundary(debug):
        settings = _settings(alpha, content_size, style_size, crop, preserve_color, luminance_only, quality,
                             max_pixels, overwrite)
        execution = _execution(device_name, precision, tile, max_memory, compile_)
        job = interpolate.plan(content, styles, output, weights=_parse_weights(weights_text), steps=steps,
                               grid=grid, alpha_sweep=alpha_sweep, alpha=alpha, mask=mask, labels=labels, ext=ext)
        stylizer = _load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        outcomes = interpolate.run(stylizer, job, settings, _reporter(as_json, quiet, debug))
    raise typer.Exit(jobs.exit_code(outcomes))


@app.command("video")
def video_command(
    source: Annotated[str, typer.Argument(
        metavar="INPUT", help="A video file (mp4, mov, mkv, webm, avi, gif...), or a folder or glob of frames.")],
    styles: Annotated[list[str] | None, typer.Argument(
        metavar="STYLE...", help="Paintings (mixed with --weights) or style videos; omit with --keyframes.",
        show_default=False)] = None,
    output: Annotated[str, typer.Option(
        "--output", "-o", help="Output video (container from the extension), or a folder (ending in /) "
                               "for PNG frames.")] = "",
    weights_text: Annotated[str | None, typer.Option(
        "--weights", "-w", metavar="W1,W2,...", help="Mix several STYLEs with these weights (default: equal).")
    ] = None,
    keyframes: Annotated[list[str] | None, typer.Option(
        "--keyframes", "-k", metavar="T:STYLE,...",
        help="Styles pinned to input times (seconds or mm:ss), eased from one to the next: "
             "0:a.jpg,4.5:b.jpg,9:c.jpg. May be repeated.")] = None,
    smooth: Annotated[float, typer.Option(
        "--smooth", min=0.0, metavar="SECONDS",
        help="Steady frames: average the content statistics over this time constant (0: off, each frame "
             "as a still). Pixels are never blended.")] = steady.DEFAULT_SMOOTH,
    start: Annotated[str | None, typer.Option(
        "--start", metavar="T", help="Begin at this input time (seconds or mm:ss(.ff)).")] = None,
    duration: Annotated[str | None, typer.Option(
        "--duration", metavar="T", help="Stylize only this long (seconds or mm:ss(.ff)).")] = None,
    fps: Annotated[float | None, typer.Option(
        "--fps", min=0.001, metavar="RATE", help="Frame rate of a folder of frames (default 25).")] = None,
    codec: Annotated[str | None, typer.Option(
        "--codec", metavar="NAME",
        help="h264 (mp4/mov/mkv default), vp9 (webm default), hevc, av1, prores, ffv1 (lossless), "
             "h264_nvenc, hevc_nvenc, or any FFmpeg encoder.")] = None,
    crf: Annotated[int | None, typer.Option(
        "--crf", min=0, metavar="N", help="Constant quality, lower is better (h264 18, hevc 20, vp9 31, av1 30).")
    ] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", metavar="NAME", help="Encoder speed/size trade-off (h264/hevc: ultrafast ... veryslow; "
                                         "av1: 0-13).")] = None,
    pix_fmt: Annotated[str | None, typer.Option(
        "--pix-fmt", metavar="FMT", help="Output pixel format (default yuv420p; 4:4:4 for odd sizes).")] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Keep the input's sound.")] = True,
    audio_tracks: Annotated[list[int] | None, typer.Option(
        "--audio-track", min=1, metavar="N",
        help="Keep only audio track N (1 = the first; default: every track). May be repeated.")] = None,
    skip_bad_frames: Annotated[bool, typer.Option(
        "--skip-bad-frames", help="Leave out frames that cannot be decoded instead of stopping.")] = False,
    alpha: Alpha = 1.0,
    content_size: ContentSize = 0,
    style_size: StyleSize = 512,
    crop: Crop = False,
    preserve_color: PreserveColor = False,
    luminance_only: LuminanceOnly = False,
    vgg: VggPath = None,
    decoder: DecoderPath = None,
    device_name: Device = "auto",
    precision: PrecisionOption = "fp32",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=0, metavar="N", help="Frames per network call. 0: 8 on CUDA, else 1.")] = 0,
    tile: Tile = 0,
    max_memory: MaxMemory = "auto",
    compile_: Compile = False,
    offline: Offline = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON summary object on stdout.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Stylize a video frame by frame, keeping its timing, sound and orientation."""
    with _error_boundary(debug):
        video = _video_module()
        if not output:
            raise UsageError("give the output with -o OUTPUT (a video file, or a folder ending in /)")
        settings = _settings(alpha, content_size, style_size, crop, preserve_color, luminance_only,
                             images.DEFAULT_QUALITY, max_pixels, overwrite)
        execution = _execution(device_name, precision, tile, max_memory, compile_, batch_size)
        options = video.Options(
            weights=None if weights_text is None else tuple(_parse_weights(weights_text) or ()),
            keyframes=tuple(video.parse_keyframes(keyframes)) if keyframes else (),
            segment=video.media.Segment(video.media.parse_time(start, "--start") if start else 0.0,
                                        video.media.parse_time(duration, "--duration") if duration else None),
            fps=None if fps is None else Fraction(fps).limit_denominator(1001), smooth=smooth,
            encoding=video.media.Encoding(codec, crf, preset, pix_fmt, audio,
                                          tuple(audio_tracks) if audio_tracks else None),
            skip_bad_frames=skip_bad_frames)
        plan = video.plan(source, styles or [], output, settings, options)
        try:
            for notice in plan.notices:
                if not quiet:
                    typer.echo(f"adain: note: {notice}", err=True)
            if plan.skip:
                result = video.Result(plan, "skipped")
            else:
                stylizer = _load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
                with _interrupt_on_sigterm(), _counting("frames", quiet or as_json) as counter:
                    if counter is not None:
                        counter.start(plan.source.info.frames)
                    result = video.run(stylizer, plan, settings, None if counter is None else counter.advance)
        finally:
            plan.close()
        for warning in [] if quiet else result.warnings():
            typer.echo(f"adain: warning: {warning}", err=True)
        _report_video(result, as_json, quiet)
    raise typer.Exit(0)


def _video_module() -> Any:
    """The video command's module; PyAV is a dependency, but an install may have lost it."""
    try:
        from . import video
    except ImportError as exc:
        if exc.name in ("av", "av.error"):
            raise UsageError("adain video needs PyAV: pip install av") from None
        raise
    return video


@contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a long run as Ctrl-C does: nothing partial is left behind."""
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


class _Counter:
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

    def say(self, line: str) -> None:
        """A line that must not tear the bar."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            typer.echo(line, err=True)


@contextmanager
def _counting(unit: str, quiet: bool, prefix: str = "") -> Iterator[_Counter | None]:
    """A _Counter, None when quiet; the bar only where stderr is a terminal."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield _Counter(None, unit, prefix)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Counter(progress, unit, prefix)


def _report_video(result: video.Result, as_json: bool, quiet: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    if quiet:
        return
    if result.status == "skipped":
        typer.echo(f"skipped {result.plan.output}: exists (use --overwrite to replace)")
        return
    if result.skipped_frames:
        times = ", ".join(f"{t:.3f}" for t in result.skipped_frames[:5])
        more = f" and {len(result.skipped_frames) - 5} more" if len(result.skipped_frames) > 5 else ""
        typer.echo(f"adain: warning: left out {len(result.skipped_frames)} frame(s) that could not be decoded "
                   f"(at {times} s{more})", err=True)
    typer.echo(f"wrote {result.plan.output}: {result.frames} frames in {result.seconds:.1f} s "
               f"({result.rate:.2f} frames/s)")


@app.command("dataset")
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
    quality: Quality = images.DEFAULT_QUALITY,
    content_size: ContentSize = 0,
    style_size: StyleSize = 512,
    crop: Crop = False,
    preserve_color: PreserveColor = False,
    luminance_only: LuminanceOnly = False,
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
    vgg: VggPath = None,
    decoder: DecoderPath = None,
    device_name: Device = "auto",
    precision: PrecisionOption = "fp32",
    batch_size: PairsPerCall = 0,
    tile: Tile = 0,
    max_memory: MaxMemory = "auto",
    compile_: Compile = False,
    offline: Offline = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Make every output again (default: continue, keeping finished ones).")] = False,
    max_pixels: MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON summary object on stdout.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Restyle a whole image dataset (Stylized-ImageNet): each image in random paintings, reproducibly,
    resumably, sharded over torchrun or Slurm."""
    with _error_boundary(debug):
        low, high = dataset.parse_alpha(alpha_text)
        settings = _settings(low, content_size, style_size, crop, preserve_color, luminance_only, quality,
                             max_pixels, overwrite)
        shard = dataset.Shard.parse(shard_text) if shard_text else dataset.Shard.from_environment()
        options = dataset.Options(styles_per_image, seed, (low, high),
                                  None if ext is None else jobs.check_extension(ext), shard)
        if shard.source and shard.source != "--shard":
            device_name = device.for_local_process(device_name, shard.local)
        execution = _execution(device_name, precision, tile, max_memory, compile_, batch_size)
        prefix = f"[{shard.index}/{shard.count}] " if shard.count > 1 else ""
        plan = dataset.plan(content_dir, style_dir, output, options)
        for notice in plan.notices:
            if not quiet:
                typer.echo(f"adain: note: {prefix}{notice}", err=True)
        stylizer = _load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        bank = None
        if style_bank != "off" and not color.recolours_style(settings.color_mode):
            bank = style_bank_module.StyleBank(Path(style_bank) if style_bank else
                                               style_bank_module.default_location(), stylizer, settings)
        with _interrupt_on_sigterm(), _counting("images", quiet or as_json, prefix) as counter:
            result = dataset.run(stylizer, plan, settings, bank=bank, workers=workers or _default_workers(),
                                 on_outcome=_dataset_reporter(counter, debug),
                                 on_start=None if counter is None else counter.start)
        if bank is not None and bank.problem:
            typer.echo(f"adain: warning: {bank.problem}", err=True)
        if as_json:
            typer.echo(json.dumps(result.as_dict()))
        elif not quiet:
            resumed = f", {result.resumed} done before" if result.resumed else ""
            typer.echo(f"{prefix}{jobs.summary(result.outcomes)}{resumed}; manifest {plan.manifest}")
    raise typer.Exit(result.exit_code)


def _default_workers() -> int:
    """Decode/save threads: enough to keep a GPU fed, not more than the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(2, min(8, cpus))


def _dataset_reporter(counter: _Counter | None, debug: bool) -> Callable[[jobs.Outcome], None]:
    """Each outcome counted; each failure said on one line (its row in the manifest says it too)."""
    def report(outcome: jobs.Outcome) -> None:
        failed = outcome.status == "failed"
        if failed:
            if debug and outcome.exception is not None:
                traceback.print_exception(outcome.exception)
            line = f"adain: error: {outcome.error or 'failed'}"
            if counter is None:
                typer.echo(line, err=True)
            else:
                counter.say(line)
        if counter is not None:
            counter.advance(1, int(failed))
    return report


@app.command("serve")
def serve_command(
    styles: Annotated[Path | None, typer.Option(
        "--styles", metavar="DIR", help="Paintings the page offers as thumbnails (searched recursively).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; other than loopback, anyone who can "
                                                     "reach it can use the server (see --token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind; 0 picks a free one.")] = 8000,
    token: Annotated[str | None, typer.Option(
        "--token", metavar="TOKEN", help="Require 'Authorization: Bearer TOKEN' (or ?token=TOKEN) on every request; "
                                         "also env ADAIN_TOKEN.", envvar="ADAIN_TOKEN")] = None,
    save: Annotated[Path | None, typer.Option(
        "--save", metavar="DIR", help="Also write every result here (by default nothing is written to disk).")] = None,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, metavar="MB", help="Largest request body.")] = serve.DEFAULT_MAX_UPLOAD / 2**20,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, metavar="N", help="Largest image, decoded or resized, in pixels.")
    ] = serve.DEFAULT_MAX_PIXELS,
    queue: Annotated[int, typer.Option(
        "--queue", min=1, metavar="N", help="Requests waiting at most; more get 503 with Retry-After.")
    ] = serve.DEFAULT_QUEUE,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", metavar="NAME", help="Also answer requests whose Host is NAME (a reverse proxy's name; "
                                             "'*' for any); repeatable. By default only the bound address, "
                                             "localhost, 127.0.0.1 and [::1].")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(
        "--allow-origin", metavar="ORIGIN", help="Let pages of ORIGIN (https://example.org) use the API, with CORS "
                                                 "headers; repeatable. By default only the server's own page.")
    ] = None,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", min=1, metavar="N", help="Connections held at most; when full, the longest idle one "
                                                      "is closed for a newcomer.")] = serve.DEFAULT_MAX_CONNECTIONS,
    keep_alive: Annotated[float, typer.Option(
        "--keep-alive", min=0.1, metavar="S", help="Seconds an idle connection is kept between requests.")
    ] = serve.DEFAULT_KEEP_ALIVE,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", min=0.1, metavar="S", help="Seconds a request's headers may take to arrive.")
    ] = serve.DEFAULT_HEADER_TIMEOUT,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", min=0.1, metavar="S", help="Seconds a request's body may take to arrive.")
    ] = serve.DEFAULT_BODY_TIMEOUT,
    vgg: VggPath = None,
    decoder: DecoderPath = None,
    device_name: Device = "auto",
    precision: PrecisionOption = "fp32",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=0, metavar="N",
        help="Requests that arrive together decoded in one network call (same size). 0: 8 on CUDA, else 1.")] = 0,
    tile: Tile = 0,
    max_memory: MaxMemory = "auto",
    compile_: Compile = False,
    offline: Offline = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Serve a web page and an HTTP API (POST /v1/stylize) with the model kept warm."""
    with _error_boundary(debug):
        web = _web_module()

        limits = serve.Limits(round(max_upload_mb * 2**20), max_pixels, queue)
        paths = weights.resolve_paths(vgg, decoder)
        options = web.Options(token, save, {"vgg": str(paths[0]), "decoder": str(paths[1])}, host,
                              tuple(allow_host or ()), tuple(allow_origin or ()), body_timeout)
        connections = web.Connections(max_connections, keep_alive, header_timeout)
        library = web.Library.scan(styles, max_pixels)
        if save is not None:
            jobs.make_dirs([save])
        execution = _execution(device_name, precision, tile, max_memory, compile_, batch_size)
        listener = _listen(host, port)
        stylizer = _load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        engine = serve.Engine(stylizer, limits)
        bound_host, bound_port = listener.getsockname()[:2]
        if not quiet:
            where = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
            typer.echo(f"adain serve: {where} on {execution.device}, {len(library.files)} styles; Ctrl-C stops",
                       err=True)
        if not _is_loopback(bound_host):
            typer.echo(f"adain: warning: listening on {bound_host}, reachable from other machines"
                       + ("" if token else "; anyone who can reach it can use it: pass --token"), err=True)
        if connections.limit() < max_connections and not quiet:
            typer.echo(f"adain serve: at most {connections.limit()} connections, to stay within the open-file "
                       "limit (ulimit -n)", err=True)
        try:
            web.serve_forever(web.create_app(engine, library, options), listener, debug=debug,
                              connections=connections)
        finally:
            engine.close()
        if not quiet:
            typer.echo(f"adain serve: stopped after {engine.served} requests", err=True)


def _web_module() -> Any:
    """The serve command's HTTP module; FastAPI and uvicorn are dependencies, but an install may lack them."""
    try:
        from . import web
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"):
            raise UsageError("adain serve needs FastAPI and uvicorn: pip install fastapi uvicorn python-multipart") \
                from None
        raise
    return web


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a busy port fails at once, exit 2."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        raise UsageError(f"{host}:{port}: cannot listen ({exc.strerror or exc})") from None
    return listener


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command()
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
    vgg: VggPath = None,
    device_name: Device = "auto",
    offline: Offline = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a decoder on content and style folders (the paper's recipe by default)."""
    from . import training  # only here: it brings torch.distributed and the data loaders

    with _error_boundary(debug):
        if resume == "latest" and out is None:
            raise UsageError("--resume latest needs --out (the run to continue)")
        if vgg is None:
            with _download_progress(quiet) as progress:
                install.ensure([weights.VGG_FILE], offline=offline or install.offline_requested(), progress=progress)
        config = training.TrainConfig(
            content_dir=str(content_dir), style_dir=str(style_dir),
            out=str(out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")),
            vgg=str(vgg or weights.weights_dir() / weights.VGG_FILE), iterations=iterations,
            batch_size=batch_size, lr=lr, lr_decay=lr_decay, content_weight=content_weight,
            style_weight=style_weight, image_size=image_size, crop_size=crop_size, workers=workers, seed=seed,
            save_every=save_every, preview_every=preview_every, precision=precision, device=device_name,
        )
        quiet = quiet or not training.is_main_process()
        with _stop_on_signals() as stop, _training_progress(config, quiet) as on_step:
            last = training.train(config, resume=resume, stop=stop, on_step=on_step)
        if stop.is_set():
            _say_error(f"stopped at iteration {last}; checkpoint saved in {config.out} "
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
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
               TextColumn("{task.fields[losses]}"))
    with Progress(*columns, console=Console()) as progress:
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


@app.command("download-weights")
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
    as_json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Install the pretrained weights (verified) into the weights directory, or --verify them."""
    with _error_boundary(debug):
        if verify_only:
            checks = install.verify_installed(dest)
            for check in checks:
                _report_check(check, as_json, quiet)
            raise typer.Exit(0 if all(c.ok for c in checks) else EXIT_WEIGHTS)
        policy = RetryPolicy(attempts=retries + 1, timeout=timeout)
        with _download_progress(quiet or as_json) as progress:
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
        _say_error(f"{check.path}: {check.detail}")
    elif not (as_json or quiet):
        typer.echo(f"{check.name}: verified (sha256 {check.sha256})")


@app.command()
def info(as_json: Json = False) -> None:
    """Versions, the device that would be used and why, and the state of the weights."""
    import torch
    import torchvision

    target, why = device.explain_auto_device()
    folder = weights.weights_dir()
    where = f"${weights.HOME_ENV}" if weights.HOME_ENV in os.environ else "platform user data directory"
    checks = install.verify_installed()
    limit = memory.cgroup_room()
    facts = {
        "adain_cli": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(target),
        "device_reason": why,
        "gpu_problem": device.unusable_gpu(),
        "cpu_bf16": device.cpu_has_fast_bf16(),
        "memory_budget": memory.default_budget(target),
        "memory_limit": limit[0] if limit else None,
        "weights_dir": str(folder),
        "weights_dir_from": where,
        "mirror": os.environ.get(install.URL_ENV),
        "offline": install.offline_requested(),
        "weights": {c.name: {"ok": c.ok, "detail": c.detail, "sha256": c.sha256} for c in checks},
    }
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo(f"adain-cli {__version__} (python {facts['python']}, {facts['platform']})")
    typer.echo(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    typer.echo(f"device: {target} ({why})")
    if facts["gpu_problem"]:
        typer.echo(f"gpu: {facts['gpu_problem']}")
    typer.echo(f"cpu bf16: {'yes (--precision bf16 on cpu)' if facts['cpu_bf16'] else 'no'}")
    budget = f"memory budget (--max-memory auto): {memory.format_size(facts['memory_budget'])}"
    typer.echo(budget + (f" (container limit {memory.format_size(limit[0])})" if limit else ""))
    typer.echo(f"weights: {folder} (from the {where})")
    for check in checks:
        typer.echo(f"  {check.name}: {check.detail}" + (f" (sha256 {check.sha256})" if check.ok else ""))
    if facts["mirror"]:
        typer.echo(f"mirror: {facts['mirror']} ({install.URL_ENV})")
    if facts["offline"]:
        typer.echo(f"offline: yes ({install.OFFLINE_ENV})")


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
