"""Every GPU figure from one command: correctness, stylize throughput, video, dataset, serve, train.

    python benchmarks/gpu.py --json gpu.json            # one CUDA GPU: the whole table, at most 8 minutes
    python benchmarks/gpu.py --quick --device cpu       # every row at tiny sizes, on a CPU (the test runs this)
    python benchmarks/gpu.py --groups video serve       # some groups only (a second try, say)

It prints one table, and with `--json PATH` writes it as JSON: the device, its memory, torch, CUDA
and cuDNN versions, the date; then a row per figure, with its target and whether it holds:
`yes`/`no` (measured against its target), `n/a` (measured; no target, or the target is set for
another machine: the speed targets are for one H100/H200-class GPU at full sizes), `skipped` (not
run, and why: a package absent, a precision this device lacks, the time budget, --groups) and
`unmeasured` (it ran and failed: the error). Exit code 0 when no row failed, 1 when one did,
2 for a bad option or a core package missing.

The groups, in this order, each isolated (one that fails or lacks a package leaves the others):
- correctness: fp32 on the device against fp32 on the CPU; bf16 and fp16 against fp32; tiled
  against untiled; a tiny --max-memory against untiled; the out-of-memory retry (CUDA's allocator
  capped, so that an untiled pass really runs out). PSNR of the raw float outputs with the
  reference's range as peak: random weights put most pixels outside [0, 1], where 8-bit
  outputs would all agree.
- throughput: stylize images/s (encode, AdaIN, decode of device-resident batches) at 256x256,
  512x512 and 1920x1080 in fp32, bf16 and fp16, at the automatic batch size; the convolutions'
  FLOPs per image (counted by torch's FlopCounterMode, as executed) against the measured matrix
  product peak and the card's datasheet.
- video: `video.plan` + `video.run` on a generated 1920x1080 H.264 clip, H.264 out (h264_nvenc
  where this PyAV opens it, else libx264); decoding, encoding and the network alone; the GPU's
  busy share (NVML) during the run; and whether NVDEC (h264_cuvid) decodes here, as a probe.
- dataset: `dataset.plan` + `dataset.run` on a generated tree of 512x512 JPEGs (threads, one
  process), then the same tree as `adain dataset --shard I/N` processes on the one GPU; against
  the network alone.
- serve: `adain serve` as its own process, 32 clients on loopback (stdlib http.client) posting
  512 px photos: requests/s, p50 and p99 latency, errors.
- train: `training.train` at the paper's batch of 8 with 256 px crops, fp32 and bf16 autocast;
  the time 160,000 iterations would take.
- compile: `--compile` against eager (the same batch), and bf16 throughput compiled at each size.
  Last: a cold torch.compile is the one cost the time budget cannot bound.

Nothing downloads: random He-initialised weights in the public layout unless `--weights DIR` (or
`--vgg`/`--decoder`) names real ones; synthetic images unless `--images DIR` (content/ and style/
folders, as ../shared/images, or one folder used for both). Each group is skipped when fewer
seconds are left of `--budget` than it is estimated to take.

## On the lent GPU machine (the device tool's nvidia-h200)

Its python3 (3.12) has torch 2.11, torchvision, Pillow, Typer, Rich and NumPy (and click, h11,
idna, annotated-doc), not the rest of our dependencies, and no network: they travel as wheels in
`.whl/`, 37.7 MiB (with the source tree about 38.7 MiB of the 64 MiB a call carries), in the
versions of the project's own venv. Once, here, in the repository's root (the exclude file is
the main checkout's, also from a worktree):

    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl av==18.1.0 fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 \
        annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 opentelemetry-api==1.45.2 \
        anyio==4.16.0 uvicorn==0.54.0 websockets==17.4 python-multipart==0.0.34 platformdirs==4.14.9

(typing_extensions because pydantic-core needs 4.16, anyio because FastAPI needs 4.1 or later,
opentelemetry-api because FastAPI imports it; click, h11 and idna are left to the machine's own:
a newer click could break its Typer.) Then one call of the device tool's `run`, with
carry [".whl"] and timeout_s 600, the whole command on one line:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 && python3 benchmarks/gpu.py --json $OUT/gpu.json 2>&1 | tee $OUT/gpu.log

The 15 minutes of device time cover every try and each machine's start (a minute or two), which
--budget does not count: the whole run fits once; a second try names the groups to redo
(--groups) with a --budget that fits what is left.
"""  # noqa: E501 (the command above is one line, to be pasted whole)

from __future__ import annotations

import argparse
import contextlib
import copy
import http.client
import importlib
import io
import json
import math
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

try:
    from common import random_weights

    from adain_cli import Execution, Stylizer, dataset, images, jobs, memory, training
    from adain_cli.device import compute_dtype, pick_device
    from adain_cli.errors import AdainError, UsageError
    from adain_cli.weights import load_decoder, load_encoder
except ModuleNotFoundError as missing:  # platformdirs, say: every adain-cli module needs the core packages
    print(f"gpu.py: {missing.name} is absent, and adain-cli cannot load without it: install the wheels this "
          "script's docstring lists (or the project: pip install -e .)", file=sys.stderr)
    raise SystemExit(2) from None

SRC = Path(__file__).resolve().parents[1] / "src"
GROUPS = ("correctness", "throughput", "video", "dataset", "serve", "train", "compile")
# The packages a group needs beyond the core (module names); on the GPU machine they come as wheels.
NEEDS = {"video": ("av",),
         "serve": ("fastapi", "starlette", "pydantic", "uvicorn", "websockets", "python_multipart")}
PRECISIONS = ("fp32", "bf16", "fp16")
SHAPES = ("256", "512", "1080p")  # the throughput sizes' names, the same under --quick
# The targets, bf16 on one H100/H200-class GPU (images/s by size, frames/s, images/s, hours).
THROUGHPUT_TARGETS = {"256": 3000, "512": 800, "1080p": 100}
VIDEO_TARGET, DATASET_TARGET, TRAIN_HOURS_TARGET = 60, 800, 1.0
FAST_CARD = re.compile(r"H100|H200|H800|GH200|B100|B200", re.I)
# Dense TFLOP/s from the vendors' datasheets: bf16, fp16, tf32, fp32 (SXM parts unless named).
DATASHEET = (("H200", (989, 989, 495, 67)), ("H100 PCIe", (756, 756, 378, 51)), ("H100 NVL", (835, 835, 418, 60)),
             ("H100", (989, 989, 495, 67)), ("A100", (312, 312, 156, 19.5)), ("L40S", (362, 362, 183, 91.6)),
             ("L4", (121, 121, 60, 30.3)))


# --- the table --------------------------------------------------------------------------------

@dataclass
class Row:
    id: str
    group: str
    figure: str
    target: str = ""
    value: str = ""
    holds: str = "skipped"  # yes | no | n/a | skipped | unmeasured
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Table:
    """Every row the run will fill, planned before anything runs, so that none can go missing."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = {row.id: row for row in rows}
        self._open = set(self.rows)  # the rows nothing has filled yet

    def set(self, id: str, value: str, holds: str, note: str = "", **data: Any) -> None:
        row = self.rows[id]
        row.value, row.holds, row.note, row.data = value, holds, note, {k: jsonable(v) for k, v in data.items()}
        self._open.discard(id)

    def skip(self, id: str, why: str) -> None:
        self.set(id, "", "skipped", why)

    def fail(self, id: str, error: BaseException) -> None:
        self.set(id, "", "unmeasured", f"failed: {one_line(error)}")

    def open_rows(self, group: str) -> list[Row]:
        """The group's rows that nothing has filled yet."""
        return [row for row in self.rows.values() if row.group == group and row.id in self._open]


def jsonable(value: Any) -> Any:
    """Infinite PSNR (identical outputs) as null: JSON has no infinity."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: the full run's or --quick's."""

    side: int  # correctness: shorter side of the contents and styles
    pairs: int  # correctness: contents and styles each
    tiled: tuple[int, int]  # tiled against untiled: (square image side, tile)
    oom_side: int  # the out-of-memory retry's square image
    shapes: tuple[tuple[int, int], ...]  # throughput (width, height), named by SHAPES
    seconds: float  # timed work per throughput figure, after warm-up
    warmups: int  # untimed calls before a throughput figure (and training iterations before a rate)
    rounds: int  # timed calls at least
    matmul: int  # the side of the matrix products that measure the peak
    video: tuple[int, int]
    frames: int
    style_side: int
    dataset_side: int
    dataset_images: int
    processes: int
    serve_side: int
    clients: int
    serve_seconds: float
    train: tuple[int, int, int]  # batch, crop, image size (shorter side)
    train_seconds: float
    estimates: dict[str, float]  # seconds each group takes, for the budget


FULL = Sizes(side=512, pairs=2, tiled=(1024, 256), oom_side=2048,
             shapes=((256, 256), (512, 512), (1920, 1080)), seconds=2.5, warmups=2, rounds=3, matmul=8192,
             video=(1920, 1080),
             frames=300, style_side=512, dataset_side=512, dataset_images=12000, processes=4, serve_side=512,
             clients=32, serve_seconds=10.0, train=(8, 256, 512), train_seconds=10.0,
             estimates={"correctness": 45, "throughput": 75, "video": 55, "dataset": 70, "serve": 35,
                        "train": 45, "compile": 120})
# Under --quick every code path runs once or twice on images of a few dozen pixels: it checks the script.
QUICK = Sizes(side=32, pairs=1, tiled=(64, 32), oom_side=128, shapes=((32, 32), (48, 48), (64, 36)), seconds=0.0,
              warmups=0, rounds=1, matmul=256, video=(64, 36), frames=4, style_side=32, dataset_side=32,
              dataset_images=4, processes=2, serve_side=32, clients=4, serve_seconds=1.0, train=(2, 32, 48),
              train_seconds=0.0, estimates=dict.fromkeys(GROUPS, 1.0))


def planned(sizes: Sizes) -> list[Row]:
    """The rows of the table, in order."""
    side, (tiled, tile), oom = sizes.side, sizes.tiled, sizes.oom_side
    rows = [
        Row("correctness.device_vs_cpu", "correctness", f"fp32 on the device against fp32 on the CPU, {side} px (PSNR)",
            "> 50 dB"),
        Row("correctness.bf16", "correctness", f"bf16 against fp32 on the device, {side} px (PSNR)", ">= 35 dB"),
        Row("correctness.fp16", "correctness", f"fp16 against fp32 on the device, {side} px (PSNR)", ">= 35 dB"),
        Row("correctness.tiled", "correctness", f"--tile {tile} against untiled, {tiled}x{tiled} (PSNR)", ">= 50 dB"),
        Row("correctness.max_memory", "correctness", f"a tiny --max-memory against untiled, {tiled}x{tiled} (PSNR)",
            ">= 50 dB, peak within the budget"),
        Row("correctness.oom_retry", "correctness", f"out-of-memory retry against untiled, {oom}x{oom} (PSNR)",
            ">= 1 retry, >= 50 dB"),
    ]
    for name, (width, height) in zip(SHAPES, sizes.shapes, strict=True):
        for precision in PRECISIONS:
            target = f">= {THROUGHPUT_TARGETS[name]:,} images/s" if precision == "bf16" else ""
            rows.append(Row(f"throughput.{name}.{precision}", "throughput",
                            f"stylize {width}x{height} {precision}, automatic batch", target))
    width, height = sizes.video
    rows += [
        Row("video.end_to_end", "video", f"adain video {width}x{height} H.264 in and out, end to end",
            f">= {VIDEO_TARGET} frames/s"),
        Row("video.decode", "video", "  decoding alone (VideoSource: FFmpeg on the CPU, RGB)"),
        Row("video.encode", "video", "  encoding alone (VideoSink, the encoder used end to end)"),
        Row("video.network", "video", "  the network alone (same frames' size, precision, batch)"),
        Row("video.busy", "video", "  GPU busy during the end-to-end run (NVML)"),
        Row("video.nvdec", "video", "  NVDEC probe: h264_cuvid decoding alone (adain video does not use it)"),
        Row("dataset.threads", "dataset", f"adain dataset {sizes.dataset_side}x{sizes.dataset_side} JPEGs, one "
            "process, decoding threads", f">= {DATASET_TARGET} images/s"),
        Row("dataset.processes", "dataset", f"  the same as {sizes.processes} --shard processes on the one device",
            f">= {DATASET_TARGET} images/s"),
        Row("dataset.keeps_up", "dataset", "  threads against the network alone", ">= 90%"),
        Row("serve.throughput", "serve", f"adain serve, {sizes.clients} clients, {sizes.serve_side} px, loopback"),
        Row("serve.latency", "serve", "  latency p50 / p99"),
        Row("serve.errors", "serve", "  answers other than 200", "0"),
    ]
    batch, crop, _ = sizes.train
    rows += [Row(f"train.{precision}", "train", f"adain train, batch {batch}, {crop} px crops, {label}")
             for precision, label in (("fp32", "fp32"), ("bf16", "bf16 autocast"))]
    rows.append(Row("train.160k", "train", "  160,000 iterations at the faster rate", f"< {TRAIN_HOURS_TARGET:g} h"))
    rows.append(Row("compile.correctness", "compile", "--compile against eager, same batch (PSNR)", ">= 35 dB"))
    for name, (width, height) in zip(SHAPES, sizes.shapes, strict=True):
        rows.append(Row(f"compile.{name}", "compile", f"stylize {width}x{height} --compile, automatic batch",
                        f">= {THROUGHPUT_TARGETS[name]:,} images/s"))
    return rows


# --- what every group shares -------------------------------------------------------------------

@dataclass
class Context:
    sizes: Sizes
    quick: bool
    device: torch.device
    vgg: Path
    decoder: Path
    scratch: Path
    table: Table
    contents: list[torch.Tensor]
    styles: list[torch.Tensor]
    deadline: float = math.inf  # time.monotonic() by which the run is to end (--budget)
    peaks: dict[str, float] = field(default_factory=dict)  # measured matrix product TFLOP/s by precision
    _networks: tuple[Any, Any] | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def stylizer(self, precision: str = "fp32", device: str | torch.device | None = None, **options: Any) -> Stylizer:
        """A Stylizer of its own: copies of the networks, read from the files once (a Stylizer moves and
        converts the modules it is given)."""
        if self._networks is None:
            self._networks = load_encoder(self.vgg), load_decoder(self.decoder)
        encoder, decoder = (copy.deepcopy(network) for network in self._networks)
        return Stylizer(encoder, decoder, device or self.device, precision=precision, **options)

    def lacks(self, precision: str) -> str | None:
        """Why this device cannot run `precision` (the project's own rule), or None."""
        try:
            compute_dtype(precision, self.device)
        except UsageError as exc:
            return str(exc)
        return None

    @property
    def fast(self) -> str:
        """The precision the speed rows run in: bf16 (the targets'), or fp32 where it is refused."""
        return "fp32" if self.lacks("bf16") else "bf16"

    def speed_check(self, value: float, minimum: float, *, card: bool = True) -> tuple[str, str]:
        """(holds, why not judged): speed targets hold on one H100/H200-class GPU (`card`) at full sizes."""
        if self.quick or not self.cuda:
            return "n/a", "the target is for a GPU at full sizes"
        if card and not FAST_CARD.search(torch.cuda.get_device_name(self.device)):
            return "n/a", "the target is for one H100/H200-class GPU"
        return ("yes" if value >= minimum else "no"), ""


def synchronize(device: torch.device) -> None:
    """CUDA runs asynchronously: time finished work only."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synthetic(width: int, height: int, seed: int) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: colour waves plus noise, structure for the network, made here."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)
    phase = torch.rand(3, generator=generator) * 6.28
    channels = [0.5 + 0.4 * torch.sin((6 + seed % 5) * xs + 4 * ys * (c + 1) + phase[c])
                + 0.1 * torch.rand(height, width, generator=generator) for c in range(3)]
    return torch.stack(channels).clamp(0, 1).unsqueeze(0)


def picture(width: int, height: int, seed: int) -> Image.Image:
    return images.to_image(synthetic(width, height, seed))


def sample_pictures(folder: Path | None, side: int, count: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Contents and styles at `side` px: from `folder` (content/ and style/, or one folder for both), else made here
    (contents 4:3 and a few pixels off a multiple of 8, so that the stride padding is exercised)."""
    if folder is None:
        contents = [synthetic(side * 4 // 3 + 3, side, seed) for seed in range(count)]
        return contents, [synthetic(side, side, 100 + seed) for seed in range(count)]
    kinds = [folder / "content", folder / "style"] if (folder / "content").is_dir() else [folder, folder]
    found = []
    for kind in kinds:
        paths = sorted(p for p in kind.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)[:count]
        if not paths:
            raise SystemExit(f"gpu.py: {kind}: no images")
        found.append([images.load_tensor(path, side, False) for path in paths])
    return found[0], found[1]


def raw_psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR of float outputs, peak the reference's range (about 1 with real weights)."""
    output, reference = output.float().cpu(), reference.float().cpu()
    mse = torch.mean((output - reference) ** 2).item()
    peak = (reference.max() - reference.min()).item() or 1.0
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def decibels(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.1f} dB"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def judge_psnr(value: float, minimum: float) -> str:
    return "yes" if value >= minimum else "no"


# --- correctness ------------------------------------------------------------------------------

def correctness(ctx: Context) -> None:
    sizes = ctx.sizes
    pairs = [(c, s) for c in ctx.contents for s in ctx.styles]
    fp32 = ctx.stylizer()
    exact = [fp32.stylize(c, s).cpu() for c, s in pairs]
    attempt(ctx, "correctness.device_vs_cpu", _device_vs_cpu, pairs, exact)
    for precision in ("bf16", "fp16"):
        attempt(ctx, f"correctness.{precision}", _reduced, precision, pairs, exact)
    side, tile = sizes.tiled
    content, style = synthetic(side, side, 7), fp32.style_stats(ctx.styles[0])
    untiled = fp32.stylize(content, style).cpu()
    attempt(ctx, "correctness.tiled", _tiled, content, style, untiled, tile)
    attempt(ctx, "correctness.max_memory", _tiny_budget, fp32, content, style, untiled)
    attempt(ctx, "correctness.oom_retry", _oom_retry, style)


def attempt(ctx: Context, id: str, work: Callable[..., None], *args: Any) -> None:
    """One row's work, work(ctx, *args): its failure is its own row's, and its memory is given back after it."""
    try:
        work(ctx, *args)
    except Exception as exc:
        ctx.table.fail(id, exc)
    finally:
        release(ctx.device)


def _device_vs_cpu(ctx: Context, pairs: list[tuple[torch.Tensor, torch.Tensor]], exact: list[torch.Tensor]) -> None:
    reference = ctx.stylizer(device="cpu")
    scores = [raw_psnr(out, reference.stylize(c, s)) for (c, s), out in zip(pairs, exact, strict=True)]
    worst = min(scores)
    if ctx.cuda:
        note = f"{plural(len(pairs), 'pair')}, worst; " + ("cudnn.allow_tf32: fp32 convolutions run in TF32 here"
                                                 if tf32_convolutions(ctx.device) else "convolutions in plain fp32")
    else:
        note = "the device is the CPU: the same computation twice (a check of this script, not of a GPU)"
    ctx.table.set("correctness.device_vs_cpu", decibels(worst), "yes" if worst > 50 else "no", note,
                  psnr_db=worst, pairs=len(pairs))


def _reduced(ctx: Context, precision: str, pairs: list[tuple[torch.Tensor, torch.Tensor]],
             exact: list[torch.Tensor]) -> None:
    id = f"correctness.{precision}"
    why = ctx.lacks(precision)
    if why:
        ctx.table.skip(id, why)
        return
    stylizer = ctx.stylizer(precision)
    worst = min(raw_psnr(stylizer.stylize(c, s), out) for (c, s), out in zip(pairs, exact, strict=True))
    ctx.table.set(id, decibels(worst), judge_psnr(worst, 35), f"{plural(len(pairs), 'pair')}, worst", psnr_db=worst)


def _tiled(ctx: Context, content: torch.Tensor, style: Any, untiled: torch.Tensor, tile: int) -> None:
    score = raw_psnr(ctx.stylizer(tile=tile).stylize(content, style), untiled)
    ctx.table.set("correctness.tiled", decibels(score), judge_psnr(score, 50), psnr_db=score)


def _tiny_budget(ctx: Context, fp32: Stylizer, content: torch.Tensor, style: Any, untiled: torch.Tensor) -> None:
    """A budget of what is in use plus 96 MB: the planner must tile both networks to stay inside it.
    The networks are fp32's, already in place, so that what is in use already counts them."""
    budget = memory.in_use(ctx.device) + 96 * 2**20
    stylizer = Stylizer(fp32.encoder, fp32.decoder, execution=Execution.resolve(ctx.device, max_memory=budget))
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    score = raw_psnr(stylizer.stylize(content, style), untiled)
    if not ctx.cuda:  # a CPU's budget is the whole process's RSS, whose peak cannot be reset here
        ctx.table.set("correctness.max_memory", decibels(score), judge_psnr(score, 50),
                      f"budget {memory.format_size(budget)}; the peak is checked on CUDA only", psnr_db=score)
        return
    peak = torch.cuda.max_memory_allocated(ctx.device)
    holds = "yes" if score >= 50 and peak <= budget else "no"
    ctx.table.set("correctness.max_memory", f"{decibels(score)}, peak {memory.format_size(peak)}", holds,
                  f"budget {memory.format_size(budget)} (in use + 96 MB)", psnr_db=score, peak_bytes=peak,
                  budget_bytes=budget)


def _oom_retry(ctx: Context, style: Any) -> None:
    """CUDA's allocator capped a little above what is in use, a budget that says everything fits:
    the untiled pass runs out of memory for real, and the retry in smaller tiles must give the same image."""
    id = "correctness.oom_retry"
    if not ctx.cuda:
        ctx.table.skip(id, "needs CUDA: its allocator can be capped (set_per_process_memory_fraction), a CPU's cannot")
        return
    side = ctx.sizes.oom_side
    content = synthetic(side, side, 8)
    untiled = ctx.stylizer().stylize(content, style).cpu()
    release(ctx.device)
    believing = ctx.stylizer(max_memory="1T")
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    cap = torch.cuda.memory_reserved(ctx.device) + 512 * 2**20
    before = torch.cuda.memory_stats(ctx.device).get("num_ooms", 0)
    torch.cuda.set_per_process_memory_fraction(cap / total, ctx.device)
    try:
        out = believing.stylize(content, style)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
        release(ctx.device)
    ooms = torch.cuda.memory_stats(ctx.device).get("num_ooms", 0) - before
    score = raw_psnr(out, untiled)
    ctx.table.set(id, f"{decibels(score)} after {ooms} out-of-memory errors", "yes" if ooms >= 1 and score >= 50
                  else "no", f"allocator capped at {memory.format_size(cap)}", psnr_db=score, ooms=ooms)


# --- throughput ---------------------------------------------------------------------------------

def images_per_second(ctx: Context, stylizer: Stylizer, batch: torch.Tensor, style: Any) -> float:
    """Steady-state images/s of encode, AdaIN and decode on a device-resident batch, timed for about
    `sizes.seconds` after the warm-up."""
    styles = [style] * len(batch)
    device, sizes = stylizer.device, ctx.sizes

    def once() -> None:
        stylizer.render_batch(stylizer.encode_contents(batch), styles)

    for _ in range(sizes.warmups):  # cuDNN's algorithm search, the allocator's growth, compiled graphs
        once()
    synchronize(device)
    began = time.perf_counter()
    once()
    synchronize(device)
    rounds = max(sizes.rounds, math.ceil(sizes.seconds / max(time.perf_counter() - began, 1e-6)))
    began = time.perf_counter()
    for _ in range(rounds):
        once()
    synchronize(device)
    return rounds * len(batch) / (time.perf_counter() - began)


def flops_per_image(stylizer: Stylizer, width: int, height: int, style: Any) -> float:
    """The FLOPs one image costs as executed (the fused upsampling convolutions count their 2x2 kernels);
    an eager Stylizer's, which torch's counter sees op by op."""
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.rand(1, 3, height, width, device=stylizer.device)
    counter = FlopCounterMode(display=False)
    with counter:
        stylizer.render_batch(stylizer.encode_contents(image), [style])
    return float(counter.get_total_flops())


def tf32_convolutions(device: torch.device) -> bool:
    """Whether cuDNN runs this device's fp32 convolutions in TF32 (torch's default on Ampere and later)."""
    return (device.type == "cuda" and torch.backends.cudnn.allow_tf32
            and torch.cuda.get_device_capability(device) >= (8, 0))


@contextlib.contextmanager
def matmul_like_convolutions() -> Iterator[None]:
    """fp32 matrix products in TF32 exactly when cuDNN runs fp32 convolutions so: the peak those can reach."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def matmul_peak(ctx: Context, precision: str) -> float:
    """TFLOP/s of a large matrix product in `precision` on the device: the ceiling the convolutions are held to."""
    if precision not in ctx.peaks:
        side = ctx.sizes.matmul
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        a = torch.randn(side, side, device=ctx.device, dtype=dtype)
        b = torch.randn(side, side, device=ctx.device, dtype=dtype)
        with matmul_like_convolutions():
            for _ in range(3):
                a @ b
            synchronize(ctx.device)
            rounds, began = 10, time.perf_counter()
            for _ in range(rounds):
                a @ b
            synchronize(ctx.device)
        ctx.peaks[precision] = 2 * side**3 * rounds / (time.perf_counter() - began) / 1e12
    return ctx.peaks[precision]


def datasheet_peak(ctx: Context, precision: str) -> tuple[str, float] | None:
    """(card, dense TFLOP/s in `precision`) from its datasheet, TF32's for fp32 where cuDNN uses it; None if unknown."""
    if not ctx.cuda:
        return None
    name = torch.cuda.get_device_name(ctx.device).lower()
    for key, figures in DATASHEET:
        if key.lower() in name:
            return key, figures[{"bf16": 0, "fp16": 1, "fp32": 2 if tf32_convolutions(ctx.device) else 3}[precision]]
    return None


def precision_of(stylizer: Stylizer) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[stylizer.execution.dtype]


def speed_row(ctx: Context, id: str, stylizer: Stylizer, style: Any, name: str, width: int, height: int,
              counted: Stylizer, extra: str = "") -> None:
    """One throughput row: images/s at the automatic batch size, and how far from the peak; `counted`
    is the eager Stylizer whose FLOPs are counted."""
    precision, size = precision_of(stylizer), stylizer.execution.batch_size
    batch = torch.rand(size, 3, height, width, device=ctx.device)
    rate = images_per_second(ctx, stylizer, batch, style)
    del batch
    flops = flops_per_image(counted, width, height, style)
    achieved, peak, sheet = rate * flops / 1e12, matmul_peak(ctx, precision), datasheet_peak(ctx, precision)
    note = (f"batch {size}; {flops / 1e9:.1f} GFLOP/image: {achieved:.2f} TFLOP/s, {achieved / peak:.0%} of the "
            f"measured {precision} matrix product ({peak:.1f} TFLOP/s)")
    if sheet:
        note += f", {achieved / sheet[1]:.0%} of the {sheet[0]} datasheet's {sheet[1]:g}"
    holds, why = ctx.speed_check(rate, THROUGHPUT_TARGETS[name]) if precision == "bf16" else ("n/a", "")
    ctx.table.set(id, f"{rate:,.1f} images/s", holds, "; ".join(filter(None, [extra, note, why])),
                  images_per_second=rate, batch=size, flops_per_image=flops, tflops=achieved,
                  matmul_peak_tflops=peak, datasheet_tflops=sheet[1] if sheet else None)


def throughput(ctx: Context) -> None:
    for precision in PRECISIONS:
        why = ctx.lacks(precision)
        if why:
            for name in SHAPES:
                ctx.table.skip(f"throughput.{name}.{precision}", why)
            continue
        stylizer = ctx.stylizer(precision)
        style = stylizer.style_stats(ctx.styles[0])
        for name, (width, height) in zip(SHAPES, ctx.sizes.shapes, strict=True):
            id = f"throughput.{name}.{precision}"
            attempt(ctx, id, speed_row, id, stylizer, style, name, width, height, stylizer)


# --- video --------------------------------------------------------------------------------------

def make_clip(path: Path, frames: int, width: int, height: int, rate: Fraction = Fraction(30)) -> None:
    """An H.264 clip panning across a synthetic picture, 2 px a frame."""
    import av

    wide = np.asarray(picture(width + 2 * frames, height, 5))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(wide[:, 2 * i:2 * i + width]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


class Busy:
    """The GPU's busy share while a block runs: NVML's utilization (torch.cuda.utilization) sampled 20 times a
    second, the share of time in which a kernel was running."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.problem = device, [], None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Busy:
        if self.device.type != "cuda":
            self.problem = "the device is the CPU"
            return self
        try:
            torch.cuda.utilization(self.device)
        except Exception as exc:  # no NVML bindings (pynvml) in this Python, say
            self.problem = f"NVML is not usable here ({one_line(exc)})"
            return self
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def share(self) -> float | None:
        return statistics.mean(self.samples) / 100 if self.samples else None


def video_group(ctx: Context) -> None:
    from adain_cli import media  # PyAV: imported only where it is needed

    sizes = ctx.sizes
    width, height = sizes.video
    clip, style_path = ctx.scratch / "clip.mp4", ctx.scratch / "painting.png"
    make_clip(clip, sizes.frames, width, height)
    picture(sizes.style_side * 5 // 4, sizes.style_side, 3).save(style_path)
    rates: dict[str, float] = {}
    info, kept = _decode_alone(ctx, media, clip, min(sizes.frames, 120), rates)
    codec, why = _encoder(ctx, media, ctx.scratch / "probe.mp4", width, height, info.rate)
    attempt(ctx, "video.encode", _encode_alone, media, info, kept, codec, why, rates)
    kept.clear()  # up to 120 frames of 1080p: 750 MB
    stylizer = ctx.stylizer(ctx.fast)
    attempt(ctx, "video.network", _network_alone, stylizer, width, height, rates)
    attempt(ctx, "video.end_to_end", _end_to_end, media, stylizer, clip, style_path, codec, rates)
    attempt(ctx, "video.nvdec", _nvdec, clip)


def _decode_alone(ctx: Context, media: Any, clip: Path, keep: int,
                  rates: dict[str, float]) -> tuple[Any, list[Any]]:
    """Every frame through the project's reader (FFmpeg's threads, to upright RGB); the first `keep` kept."""
    source = media.VideoSource(clip)
    try:
        info, kept, count = source.info, [], 0
        began = time.perf_counter()
        for frame in source.frames():
            count += 1
            if len(kept) < keep:
                kept.append(frame)
        seconds = time.perf_counter() - began
    finally:
        source.close()
    rates["decoding"] = count / seconds
    ctx.table.set("video.decode", f"{rates['decoding']:,.1f} frames/s", "n/a", f"{count} frames of H.264 (libx264 "
                  "veryfast, CRF 23), FFmpeg's h264 decoder with its frame threads",
                  frames_per_second=rates["decoding"])
    return info, kept


def _encoder(ctx: Context, media: Any, probe: Path, width: int, height: int, rate: Fraction) -> tuple[str, str]:
    """h264_nvenc where this PyAV has it and it opens on this device, else libx264; and why."""
    import av

    if "h264_nvenc" not in av.codecs_available:
        return "libx264", "this PyAV has no h264_nvenc"
    if not ctx.cuda:
        return "libx264", "h264_nvenc not tried: the device is the CPU"
    try:
        media.Encoding(codec="h264_nvenc").resolve(probe, width, height, rate)
    except UsageError as exc:
        return "libx264", f"h264_nvenc does not open here ({exc})"
    return "h264_nvenc", "NVENC"


def _encode_alone(ctx: Context, media: Any, info: Any, kept: list, codec: str, why: str,
                  rates: dict[str, float]) -> None:
    width, height = ctx.sizes.video
    target = ctx.scratch / "encoded.mp4"
    encoding = media.Encoding(codec=codec).resolve(target, width, height, info.rate)
    sink = media.VideoSink(target, info, encoding, width, height)
    began = time.perf_counter()
    try:
        for frame in kept:
            sink.write(frame, frame.pixels)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    rates["encoding"] = len(kept) / (time.perf_counter() - began)
    ctx.table.set("video.encode", f"{rates['encoding']:,.1f} frames/s", "n/a",
                  f"{codec} ({why}), {len(kept)} frames, the project's defaults (CRF {encoding.crf})"
                  if encoding.crf is not None else f"{codec} ({why}), {len(kept)} frames", codec=codec,
                  frames_per_second=rates["encoding"])


def _network_alone(ctx: Context, stylizer: Stylizer, width: int, height: int, rates: dict[str, float]) -> None:
    size = stylizer.execution.batch_size
    style = stylizer.style_stats(ctx.styles[0])
    rates["the network"] = images_per_second(ctx, stylizer, torch.rand(size, 3, height, width, device=ctx.device),
                                             style)
    ctx.table.set("video.network", f"{rates['the network']:,.1f} frames/s", "n/a",
                  f"{precision_of(stylizer)}, batch {size}", frames_per_second=rates["the network"])


def _end_to_end(ctx: Context, media: Any, stylizer: Stylizer, clip: Path, style_path: Path, codec: str,
                rates: dict[str, float]) -> None:
    from adain_cli import video

    settings = jobs.Settings(content_size=0, style_size=ctx.sizes.style_side)
    plan = video.plan(str(clip), [str(style_path)], str(ctx.scratch / "stylized.mp4"), settings,
                      video.Options(encoding=media.Encoding(codec=codec)))
    try:
        with Busy(ctx.device) as busy:
            result = video.run(stylizer, plan, settings)
    finally:
        plan.close()
    fps = result.rate
    holds, why = ctx.speed_check(fps, VIDEO_TARGET)
    slowest = min(rates, key=rates.__getitem__) if rates else None
    pace = f"; the slowest stage alone is {slowest} ({rates[slowest]:,.1f} frames/s)" if slowest else ""
    ctx.table.set("video.end_to_end", f"{fps:,.1f} frames/s", holds,
                  f"{result.frames} frames, {precision_of(stylizer)}, batch {stylizer.execution.batch_size}, "
                  f"H.264 decoded by FFmpeg on the CPU, encoded by {codec}{pace}" + (f"; {why}" if why else ""),
                  frames_per_second=fps, frames=result.frames, codec=codec)
    share = busy.share
    if share is None:
        ctx.table.skip("video.busy", busy.problem or "no samples")
        return
    network = rates.get("the network")
    starved = f"; the network alone needs {fps / network:.0%} of the run's time" if network else ""
    ctx.table.set("video.busy", f"{share:.0%}", "n/a", f"{len(busy.samples)} samples{starved}", busy_share=share)


def _nvdec(ctx: Context, clip: Path) -> None:
    """Whether this PyAV's NVDEC decoder (h264_cuvid) decodes here, and how fast alone, to RGB on the host."""
    import av

    if "h264_cuvid" not in av.codecs_available:
        ctx.table.skip("video.nvdec", "this PyAV has no h264_cuvid")
        return
    if not ctx.cuda:
        ctx.table.skip("video.nvdec", "NVDEC needs an NVIDIA GPU")
        return
    count = 0
    try:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            context = av.CodecContext.create("h264_cuvid", "r")
            context.extradata = stream.codec_context.extradata  # the MP4's parameter sets
            began = time.perf_counter()
            for packet in container.demux(stream):
                for frame in context.decode(packet):
                    frame.to_ndarray(format="rgb24")
                    count += 1
            seconds = time.perf_counter() - began
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        ctx.table.set("video.nvdec", "does not decode here", "n/a", one_line(exc))
        return
    ctx.table.set("video.nvdec", f"{count / seconds:,.1f} frames/s", "n/a", f"{count} frames",
                  frames_per_second=count / seconds)


# --- dataset ------------------------------------------------------------------------------------

def make_tree(root: Path, count: int, side: int, style_side: int) -> tuple[Path, Path]:
    """An ImageNet-like tree: `count` JPEGs of side x side in 10 class folders (crops of a few synthetic
    pictures), and 8 paintings. Written on threads: Pillow encodes without the GIL."""
    content, styles = root / "content", root / "styles"
    classes = [content / f"n{k:08d}" for k in range(10)]
    for folder in [*classes, styles]:
        folder.mkdir(parents=True)
    bases = [np.asarray(picture(side * 3 // 2, side * 3 // 2, seed)) for seed in range(4)]

    def write(i: int) -> None:
        dx, dy = i * 37 % (side // 2), i * 53 % (side // 2)
        crop = bases[i % len(bases)][dy:dy + side, dx:dx + side]
        Image.fromarray(crop).save(classes[i % len(classes)] / f"img_{i:06d}.JPEG", quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(write, range(count)))
    for j in range(8):
        picture(style_side * 5 // 4, style_side, 200 + j).save(styles / f"painting{j}.jpg", quality=95)
    return content, styles


def child_env(quick: bool) -> dict[str, str]:
    """The environment of the adain processes this script starts: this source tree first, offline;
    one thread each under --quick, as this process (see `main`)."""
    env = dict(os.environ, ADAIN_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    if quick:
        env["OMP_NUM_THREADS"] = "1"
    return env


def dataset_group(ctx: Context) -> None:
    sizes, table = ctx.sizes, ctx.table
    content, styles = make_tree(ctx.scratch / "tree", sizes.dataset_images, sizes.dataset_side, sizes.style_side)
    rates: dict[str, float] = {}
    attempt(ctx, "dataset.threads", _dataset_threads, content, styles, rates)
    attempt(ctx, "dataset.processes", _dataset_processes, content, styles)
    if "threads" in rates:
        attempt(ctx, "dataset.keeps_up", _keeps_up, styles, rates["threads"])
    else:
        table.skip("dataset.keeps_up", "the threads row did not run")


def _dataset_threads(ctx: Context, content: Path, styles: Path, rates: dict[str, float]) -> None:
    stylizer = ctx.stylizer(ctx.fast)
    settings = jobs.Settings(content_size=0, style_size=ctx.sizes.style_side)
    workers = dataset.default_workers()
    # A warm-up on a shard of the tree: cuDNN's search for each batch shape, threads and caches started.
    warm = dataset.plan(content, styles, ctx.scratch / "warm", dataset.Options(shard=dataset.Shard(0, 4)))
    dataset.run(stylizer, warm, settings, workers=workers)
    plan = dataset.plan(content, styles, ctx.scratch / "out-threads", dataset.Options())
    result = dataset.run(stylizer, plan, settings, workers=workers)
    written = result.count("written")
    if written != len(plan.jobs):
        raise RuntimeError(f"{len(plan.jobs) - written} of {len(plan.jobs)} outputs failed: {result.as_dict()}")
    rates["threads"] = rate = written / result.seconds
    holds, why = ctx.speed_check(rate, DATASET_TARGET)
    ctx.table.set("dataset.threads", f"{rate:,.1f} images/s", holds, f"{written} images, {precision_of(stylizer)}, "
                  f"batch {stylizer.execution.batch_size}, {workers} worker threads" + (f"; {why}" if why else ""),
                  images_per_second=rate, images=written, workers=workers)


def _keeps_up(ctx: Context, styles: Path, rate: float) -> None:
    """The threads' rate against the network's alone on the same size, precision and batch."""
    stylizer = ctx.stylizer(ctx.fast)
    side, size = ctx.sizes.dataset_side, stylizer.execution.batch_size
    style = stylizer.style_stats(images.load_tensor(sorted(styles.iterdir())[0], ctx.sizes.style_side, False))
    network = images_per_second(ctx, stylizer, torch.rand(size, 3, side, side, device=ctx.device), style)
    share = rate / network
    holds = "n/a" if ctx.quick else "yes" if share >= 0.9 else "no"
    ctx.table.set("dataset.keeps_up", f"{share:.0%}", holds, f"the network alone: {network:,.1f} images/s"
                  + ("; tiny images under --quick: each file's fixed costs dominate" if ctx.quick else ""),
                  share=share, network_images_per_second=network)


def _dataset_processes(ctx: Context, content: Path, styles: Path) -> None:
    """`adain dataset --shard I/N` as N processes on the one device, all at once: decoding in N
    interpreters, each with its own share of the threads."""
    count = ctx.sizes.processes
    workers = max(2, dataset.default_workers() // count)
    out = ctx.scratch / "out-processes"
    began = time.perf_counter()
    running = [subprocess.Popen(
        [sys.executable, "-m", "adain_cli", "dataset", str(content), str(styles), "-o", str(out), "--shard",
         f"{i}/{count}", "--device", str(ctx.device), "--precision", ctx.fast, "--style-size",
         str(ctx.sizes.style_side), "--style-bank", "off", "--workers", str(workers), "--vgg", str(ctx.vgg),
         "--decoder", str(ctx.decoder), "--json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(ctx.quick)) for i in range(count)]
    results = []
    for process in running:
        stdout, stderr = process.communicate(timeout=900)
        if process.returncode != 0:
            said = (stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"adain dataset --shard exited with {process.returncode}: {said}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    wall = time.perf_counter() - began
    written = sum(r["written"] for r in results)
    rate = written / max(r["seconds"] for r in results)
    holds, why = ctx.speed_check(rate, DATASET_TARGET)
    ctx.table.set("dataset.processes", f"{rate:,.1f} images/s", holds,
                  f"{written} images / the longest process's run ({count} processes x {workers} threads; "
                  f"{wall:.1f} s wall with their start-up)" + (f"; {why}" if why else ""),
                  images_per_second=rate, images=written, processes=count, wall_seconds=wall)


# --- serve --------------------------------------------------------------------------------------

def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type, as a browser's form sends it."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
              f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, (filename, data) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def renamed(photo: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment after its start marker: the same pixels, other bytes, so
    that the server's feature cache (keyed by the bytes' hash) cannot answer it."""
    text = tag.encode()
    return photo[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + photo[2:]


class Requests:
    """The form of every request: a new photo each time (one of a few pictures, bytes never seen before)
    in one of a few paintings, whose statistics the server keeps, as for a library's paintings."""

    def __init__(self, photos: list[bytes], paintings: list[bytes], fields: dict[str, str]) -> None:
        self.photos, self.paintings, self.fields = photos, paintings, fields

    def body(self, client: int, number: int) -> tuple[bytes, str]:
        photo = renamed(self.photos[(client + number) % len(self.photos)], f"{client}.{number}")
        return multipart(self.fields, {"content": ("photo.jpg", photo),
                                       "style": ("painting.jpg", self.paintings[client % len(self.paintings)])})


@contextlib.contextmanager
def running_server(command: list[str], env: dict[str, str], timeout: float = 180) -> Iterator[tuple[str, int]]:
    """`adain serve` as its own process; (host, port) once it says where it listens. Stopped on the way out."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    said: list[str] = []

    def read() -> None:  # the server's stderr drained all along, so that it never blocks on a full pipe
        assert process.stderr is not None
        for line in process.stderr:
            said.append(line)
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        yield _address(lines, said, timeout)
    finally:
        process.terminate()
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _address(lines: queue.Queue[str], said: list[str], timeout: float) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise RuntimeError(f"adain serve did not say where it listens within {timeout:.0f} s") from None
        if not line:
            raise RuntimeError(f"adain serve stopped: {said[-1].strip() if said else 'no output'}")
        found = re.search(r"http://([\d.]+):(\d+)", line)
        if found:
            return found.group(1), int(found.group(2))


def post_for(host: str, port: int, requests: Requests, clients: int, warmup: float,
             seconds: float) -> list[tuple[float, float, object]]:
    """`clients` threads, each on its own keep-alive connection: one request each to warm up (the
    server's first batches, cuDNN's search), then posting without pause for `warmup` and `seconds` more.
    The requests that ended in those `seconds` (started, latency, status): counted by their end, as at a
    steady state, since the clients keep every connection busy until the window closes."""
    records: list[tuple[float, float, object]] = []
    lock = threading.Lock()
    window: dict[str, float] = {}

    def open_window() -> None:  # run once, by the last client to arrive, before any goes on
        window["from"] = time.perf_counter() + warmup
        window["until"] = window["from"] + seconds

    ready = threading.Barrier(clients, action=open_window)

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=300)
        try:
            connection, _ = _post(connection, host, port, *requests.body(k, 0))
        finally:  # a client that cannot start must not leave the others waiting for it
            try:
                ready.wait(timeout=600)
            except threading.BrokenBarrierError:
                connection.close()
                return
        number = 1
        while (started := time.perf_counter()) < window["until"]:
            connection, status = _post(connection, host, port, *requests.body(k, number))
            number += 1
            with lock:
                records.append((started, time.perf_counter() - started, status))
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not window:
        raise RuntimeError("the clients' first requests did not all come back within 600 s")
    return [r for r in records if window["from"] <= r[0] + r[1] <= window["until"]]


def _post(connection: http.client.HTTPConnection, host: str, port: int, body: bytes,
          kind: str) -> tuple[http.client.HTTPConnection, object]:
    """One POST /v1/stylize: (the connection to go on with, the status or the error's name)."""
    try:
        connection.request("POST", "/v1/stylize", body=body, headers={"Content-Type": kind})
        response = connection.getresponse()
        response.read()
        return connection, response.status
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        return http.client.HTTPConnection(host, port, timeout=300), type(exc).__name__


def serve_group(ctx: Context) -> None:
    sizes = ctx.sizes
    side, clients = sizes.serve_side, sizes.clients
    requests = Requests([jpeg(picture(side, side, 400 + i)) for i in range(8)],
                        [jpeg(picture(sizes.style_side * 5 // 4, sizes.style_side, 300 + j)) for j in range(4)],
                        {"alpha": "1", "content_size": "0", "style_size": str(sizes.style_side), "format": "jpeg"})
    command = [sys.executable, "-m", "adain_cli", "serve", "--port", "0", "--vgg", str(ctx.vgg), "--decoder",
               str(ctx.decoder), "--device", str(ctx.device), "--precision", ctx.fast, "--queue", str(4 * clients),
               "--max-connections", str(2 * clients + 16)]
    with running_server(command, child_env(ctx.quick)) as (host, port):
        measured = post_for(host, port, requests, clients, sizes.serve_seconds / 3, sizes.serve_seconds)
    elapsed = sizes.serve_seconds
    answered = [latency for _, latency, status in measured if status == 200]
    errors = [status for _, _, status in measured if status != 200]
    if not answered:
        raise RuntimeError(f"no request was answered with 200 ({len(errors)} errors, first {errors[:1]})")
    rate = len(answered) / elapsed
    table = ctx.table
    table.set("serve.throughput", f"{rate:,.1f} requests/s", "n/a", f"{len(answered)} answered in {elapsed:.0f} s "
              f"after a {sizes.serve_seconds / 3:.0f} s warm-up; {ctx.fast}, JPEG in and out, a new photo each "
              "time (never in the feature cache), 4 paintings",
              requests_per_second=rate, requests=len(answered))
    cut = statistics.quantiles(answered, n=100) if len(answered) > 1 else answered * 99
    table.set("serve.latency", f"{statistics.median(answered):.3f} s / {cut[98]:.3f} s", "n/a",
              f"max {max(answered):.3f} s", p50_seconds=statistics.median(answered), p99_seconds=cut[98])
    kinds = sorted({str(status) for status in errors})
    table.set("serve.errors", str(len(errors)), "yes" if not errors else "no",
              f"statuses: {', '.join(kinds)}" if errors else "", errors=len(errors))


# --- train --------------------------------------------------------------------------------------

def train_group(ctx: Context) -> None:
    image_size = ctx.sizes.train[2]
    folders = []
    for kind, seed in (("content", 500), ("style", 600)):
        folder = ctx.scratch / "train-data" / kind
        folder.mkdir(parents=True)
        for i in range(4 if ctx.quick else 32):
            picture(image_size * 5 // 4, image_size, seed + i).save(folder / f"{i:03d}.jpg", quality=90)
        folders.append(folder)
    rates: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        attempt(ctx, f"train.{precision}", _train, precision, folders, rates)
    if not rates:
        ctx.table.skip("train.160k", "neither training row ran")
        return
    best = max(rates, key=rates.__getitem__)
    hours = 160_000 / rates[best] / 3600
    holds, why = ctx.speed_check(-hours, -TRAIN_HOURS_TARGET, card=False)
    ctx.table.set("train.160k", f"{hours:,.2f} h", holds, f"at the {best} rate" + (f"; {why}" if why else ""),
                  hours=hours, precision=best)


def _train(ctx: Context, precision: str, folders: list[Path], rates: dict[str, float]) -> None:
    """Iterations/s after a warm-up, the run stopped (as Ctrl-C stops it) once enough are timed."""
    batch, crop, image_size = ctx.sizes.train
    workers = 0 if ctx.quick else max(2, min(6, (os.cpu_count() or 2) // 3))  # per stream: contents and styles
    config = training.TrainConfig(
        content_dir=str(folders[0]), style_dir=str(folders[1]), out=str(ctx.scratch / f"train-{precision}"),
        vgg=str(ctx.vgg), iterations=10**9, batch_size=batch, image_size=image_size, crop_size=crop, workers=workers,
        save_every=10**9, preview_every=10**9, precision=precision, device=str(ctx.device))  # type: ignore[arg-type]
    warmup, marks, stop = ctx.sizes.warmups, [], threading.Event()

    def on_step(step: training.Step) -> None:
        marks.append(step.seconds)
        if len(marks) > warmup + ctx.sizes.rounds and marks[-1] - marks[warmup] >= ctx.sizes.train_seconds:
            stop.set()

    training.train(config, stop=stop, on_step=on_step)
    counted = marks[warmup:]
    rates[precision] = rate = (len(counted) - 1) / (counted[-1] - counted[0])
    ctx.table.set(f"train.{precision}", f"{rate:,.2f} iterations/s", "n/a",
                  f"{len(counted) - 1} timed after {warmup}; {rate * batch:,.1f} images/s; {workers} loader workers "
                  "per stream", iterations_per_second=rate)


# --- compile ------------------------------------------------------------------------------------

def compile_group(ctx: Context) -> None:
    if ctx.quick and not ctx.cuda:
        for row in ctx.table.open_rows("compile"):
            ctx.table.skip(row.id, "--quick on a CPU: a cold torch.compile builds C++ for minutes here")
        return
    eager = ctx.stylizer(ctx.fast)
    style = eager.style_stats(ctx.styles[0])
    longest = 0.0
    for index, (name, (width, height)) in enumerate(zip(SHAPES, ctx.sizes.shapes, strict=True)):
        left = ctx.deadline - time.monotonic()
        if left < longest:  # the group's estimate cannot bound a cold compile: each size is checked again
            ctx.table.skip(f"compile.{name}", f"the time budget: the last size took {longest:.0f} s, {left:.0f} s "
                                              "are left of --budget")
            continue
        began = time.monotonic()
        try:
            compiled, batch, out, seconds = _first_compiled_call(ctx, style, width, height)
        except Exception as exc:
            for id in (f"compile.{name}", *(["compile.correctness"] if index == 0 else [])):
                ctx.table.fail(id, exc)
            release(ctx.device)
            continue
        if index == 0:
            attempt(ctx, "compile.correctness", _compiled_against_eager, eager, batch, out, style, seconds)
        del batch, out
        attempt(ctx, f"compile.{name}", speed_row, f"compile.{name}", compiled, style, name, width, height,
                eager, f"compiled in {seconds:.0f} s")
        del compiled
        longest = max(longest, time.monotonic() - began)


def _first_compiled_call(ctx: Context, style: Any, width: int, height: int,
                         ) -> tuple[Stylizer, torch.Tensor, torch.Tensor, float]:
    """A Stylizer under --compile and its first batch at this size: (it, the batch, the output, seconds taken)."""
    # Each size compiled afresh, as one `adain stylize --compile` process at that size compiles it:
    # without the reset, the second size would be compiled for dynamic shapes.
    torch._dynamo.reset()
    compiled = ctx.stylizer(ctx.fast, compile=True)
    batch = torch.rand(compiled.execution.batch_size, 3, height, width, device=ctx.device)
    began = time.perf_counter()
    out = compiled.render_batch(compiled.encode_contents(batch), [style] * len(batch))
    synchronize(ctx.device)
    return compiled, batch, out, time.perf_counter() - began


def _compiled_against_eager(ctx: Context, eager: Stylizer, batch: torch.Tensor, out: torch.Tensor, style: Any,
                            seconds: float) -> None:
    score = raw_psnr(out, eager.render_batch(eager.encode_contents(batch), [style] * len(batch)))
    ctx.table.set("compile.correctness", decibels(score), judge_psnr(score, 35),
                  f"{precision_of(eager)}, batch {len(batch)} at {batch.shape[-1]}x{batch.shape[-2]}; the first call "
                  f"(compiling) took {seconds:.0f} s", psnr_db=score, compile_seconds=seconds)


# --- the run ------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Context], None]] = {
    "correctness": correctness, "throughput": throughput, "video": video_group, "dataset": dataset_group,
    "serve": serve_group, "train": train_group, "compile": compile_group}


def run_group(ctx: Context, group: str, chosen: list[str]) -> None:
    """One group, isolated: skipped (and why) or run; a failure marks its unfinished rows, never the others."""
    table = ctx.table

    def skip_all(why: str) -> None:
        for row in table.open_rows(group):
            table.skip(row.id, why)

    absent = absent_packages(NEEDS.get(group, ()))
    left, estimate = ctx.deadline - time.monotonic(), ctx.sizes.estimates[group]
    if group not in chosen:
        skip_all("not in --groups")
    elif absent:
        skip_all(f"absent: {'; '.join(absent)} (install the wheels this script's docstring lists)")
    elif left < estimate:
        skip_all(f"the time budget: about {estimate:.0f} s needed, {max(left, 0):.0f} s left of --budget")
    else:
        began = time.monotonic()
        print(f"gpu.py: {group} ...", file=sys.stderr, flush=True)
        try:
            RUNNERS[group](ctx)
        except Exception as exc:
            for row in table.open_rows(group):
                table.fail(row.id, exc)
        finally:
            release(ctx.device)
        for row in table.open_rows(group):  # one its group forgot: this script's own bug, said so
            table.fail(row.id, RuntimeError("its group ended without filling it"))
        print(f"gpu.py: {group} took {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)


def absent_packages(names: tuple[str, ...]) -> list[str]:
    """The packages of `names` that do not import here, each with why if it is more than its absence
    (a wheel whose libraries do not load is as absent as no wheel)."""
    absent = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            plain = isinstance(exc, ModuleNotFoundError) and exc.name == name
            absent.append(name if plain else f"{name} ({one_line(exc)})")
    return absent


def weight_files(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path, str]:
    from adain_cli.weights import DECODER_FILE, VGG_FILE

    vgg, decoder = (args.weights / VGG_FILE, args.weights / DECODER_FILE) if args.weights else (args.vgg, args.decoder)
    if vgg is None and decoder is None:
        return (*random_weights(scratch), "random, He-initialised, in the public layout")
    if vgg is None or decoder is None:
        usage("give both --vgg and --decoder, or --weights DIR")
    for path in (vgg, decoder):
        if not path.is_file():
            usage(f"{path}: no such weight file")
    return vgg, decoder, f"{vgg}, {decoder}"


def usage(message: str) -> None:
    print(f"gpu.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def describe(ctx: Context, weights: str, images_from: Path | None) -> dict[str, Any]:
    """The machine and the run, for the table's head."""
    from adain_cli import about

    facts: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "sizes": "quick" if ctx.quick else "full", "device": str(ctx.device),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "cpu": about.cpu_model(), "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": about.cpu_bf16_features(), "weights": weights,
        "images": str(images_from) if images_from else "synthetic", "commit": _commit()}
    if ctx.cuda:
        properties = torch.cuda.get_device_properties(ctx.device)
        facts.update(name=properties.name, memory_bytes=properties.total_memory,
                     capability=f"{properties.major}.{properties.minor}", driver=_driver(),
                     tf32_convolutions=tf32_convolutions(ctx.device))
    else:
        facts.update(name=about.cpu_model(), memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        import av

        facts["pyav"] = f"{av.__version__} (FFmpeg {av.ffmpeg_version_info})"
    except ImportError:
        facts["pyav"] = None
    return facts


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(SRC.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        return done.stdout.strip() or None
    return None


def _driver() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None
    return None


def render(facts: dict[str, Any], rows: list[Row], seconds: float) -> str:
    """The table as plain text: it goes to logs as often as to terminals."""
    memory_text = f"{facts['memory_bytes'] / 2**30:.1f} GiB"
    gpu = f", compute capability {facts['capability']}, driver {facts['driver']}" if "capability" in facts else ""
    tf32 = f"; fp32 convolutions in TF32: {'yes' if facts['tf32_convolutions'] else 'no'}" if gpu else ""
    lines = [f"adain-cli GPU figures, {facts['date']}, {facts['sizes']} sizes, {seconds:.0f} s"
             + (f", commit {facts['commit']}" if facts["commit"] else ""),
             f"device: {facts['name']} ({facts['device']}), {memory_text}{gpu}",
             f"torch {facts['torch']}, CUDA {facts['cuda']}, cuDNN {facts['cudnn']}, Python {facts['python']}, "
             f"PyAV {facts['pyav'] or 'absent'}{tf32}",
             f"host: {facts['cpu']}, {facts['cpu_cores']} cores ({facts['torch_threads']} torch threads), "
             f"bf16: {', '.join(facts['cpu_bf16']) or 'none'}",
             f"weights: {facts['weights']}; images: {facts['images']}", ""]
    widths = (max(len(r.figure) for r in rows), max(len(r.value) for r in rows), max(len(r.target) for r in rows))
    lines.append(f"{'figure':<{widths[0]}}  {'value':<{widths[1]}}  {'target':<{widths[2]}}  holds")
    for row in rows:
        lines.append(f"{row.figure:<{widths[0]}}  {row.value:<{widths[1]}}  {row.target:<{widths[2]}}  {row.holds}")
        if row.note:
            lines.append(f"{'':<4}{row.note}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="every row at tiny sizes, in well under a minute")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the table here as JSON")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS), metavar="GROUP",
                        help=f"run only these ({', '.join(GROUPS)})")
    parser.add_argument("--budget", type=float, default=480, metavar="S",
                        help="seconds for the whole run: a group that would not fit is skipped (default 480)")
    parser.add_argument("--weights", type=Path, metavar="DIR", help="vgg_normalised.pth and decoder.pth here")
    parser.add_argument("--vgg", type=Path, help="the encoder's weight file")
    parser.add_argument("--decoder", type=Path, help="the decoder's weight file")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="correctness on these: DIR/content and DIR/style (as ../shared/images), or DIR for both")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    sizes = QUICK if args.quick else FULL
    try:
        device = pick_device(args.device)
    except AdainError as exc:
        usage(str(exc))
    if args.images is not None and not args.images.is_dir():
        usage(f"{args.images}: --images must be a folder")
    if args.quick:
        # --quick checks the script, not speeds: one thread per process, so that on a busy machine
        # OpenMP's spinning threads do not multiply its time (a 2-core machine at load 5: 80 s, one thread 25 s).
        torch.set_num_threads(1)
    torch.manual_seed(0)
    table = Table(planned(sizes))
    with tempfile.TemporaryDirectory(prefix="adain-gpu-") as scratch_name:
        scratch = Path(scratch_name)
        vgg, decoder, weights = weight_files(args, scratch)
        contents, styles = sample_pictures(args.images, sizes.side, sizes.pairs)
        ctx = Context(sizes, args.quick, device, vgg, decoder, scratch, table, contents, styles,
                      deadline=started + args.budget)
        facts = describe(ctx, weights, args.images)
        for group in GROUPS:
            run_group(ctx, group, args.groups)
    rows = list(table.rows.values())
    seconds = time.monotonic() - started
    print(render(facts, rows, seconds), flush=True)
    if args.json:
        document = {"facts": {**facts, "seconds": round(seconds, 1)},
                    "rows": [vars(row) for row in rows]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(row.holds == "unmeasured" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
