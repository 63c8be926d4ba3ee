"""`adain video`: a video (or a folder of frames) stylized frame by frame."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import images, mixing, steady
from ..errors import UsageError
from . import _options as opt
from ._boundary import error_boundary, warn
from ._model import load_stylizer
from ._progress import counting

if TYPE_CHECKING:
    from .. import video


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
    alpha: opt.Alpha = 1.0,
    content_size: opt.ContentSize = 0,
    style_size: opt.StyleSize = 512,
    work_size: opt.WorkSize = 0,
    crop: opt.Crop = False,
    preserve_color: opt.PreserveColor = False,
    luminance_only: opt.LuminanceOnly = False,
    vgg: opt.VggPath = None,
    decoder: opt.DecoderPath = None,
    device_name: opt.Device = "auto",
    precision: opt.PrecisionOption = "fp32",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=0, metavar="N", help="Frames per network call. 0: 8 on CUDA, else 1.")] = 0,
    tile: opt.Tile = 0,
    max_memory: opt.MaxMemory = "auto",
    compile_: opt.Compile = False,
    offline: opt.Offline = False,
    overwrite: opt.Overwrite = False,
    max_pixels: opt.MaxPixels = images.DEFAULT_MAX_PIXELS,
    as_json: opt.JsonSummary = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Stylize a video frame by frame, keeping its timing, sound and orientation."""
    with error_boundary(debug):
        video = _video_module()
        if not output:
            raise UsageError("give the output with -o OUTPUT (a video file, or a folder ending in /)")
        settings = opt.ImageOptions(alpha=alpha, content_size=content_size, style_size=style_size, crop=crop,
                                    preserve_color=preserve_color, luminance_only=luminance_only,
                                    max_pixels=max_pixels, overwrite=overwrite, work_size=work_size).settings()
        execution = opt.ExecutionOptions(device=device_name, precision=precision, tile=tile, max_memory=max_memory,
                                         compile=compile_, batch_size=batch_size).resolve()
        options = video.Options(
            weights=mixing.parse_weights(weights_text),
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
                stylizer = load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
                with counting("frames", quiet or as_json) as counter:
                    if counter is not None:
                        counter.start(plan.source.info.frames)
                    result = video.run(stylizer, plan, settings, None if counter is None else counter.advance)
        finally:
            plan.close()
        for warning in [] if quiet else result.warnings():
            warn(warning)
        _report(result, as_json, quiet)
    raise typer.Exit(0)


def _video_module() -> Any:
    """The video command's module; PyAV is a dependency, but an install may have lost it."""
    try:
        from .. import video
    except ImportError as exc:
        if exc.name in ("av", "av.error"):
            raise UsageError("adain video needs PyAV: pip install av") from None
        raise
    return video


def _report(result: video.Result, as_json: bool, quiet: bool) -> None:
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
        warn(f"left out {len(result.skipped_frames)} frame(s) that could not be decoded (at {times} s{more})")
    typer.echo(f"wrote {result.plan.output}: {result.frames} frames in {result.seconds:.1f} s "
               f"({result.rate:.2f} frames/s)")
