"""Options several commands share, declared once, and the objects they turn into: the image
settings (`ImageOptions`) and the execution (`ExecutionOptions`), one object per concern."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .. import color, device, images, jobs
from ..execution import Execution
from ._boundary import warn

Alpha = Annotated[float, typer.Option(
    "--alpha", "-a", min=0.0, max=1.0,
    help="Content-style trade-off: 0 reproduces the content, 1 is full style.")]
ContentSize = Annotated[int, typer.Option(
    "--content-size", min=0, metavar="PX",
    help=f"Resize content so its shorter side is PX (0 keeps the original; at least {images.MIN_SIDE}).")]
StyleSize = Annotated[int, typer.Option(
    "--style-size", min=0, metavar="PX",
    help="Resize styles so their shorter side is PX (0 keeps the original).")]
WorkSize = Annotated[int, typer.Option(
    "--work-size", min=0, metavar="PX",
    help="Run the network with the content's shorter side at PX, then bring the result to the output size "
         "guided by the full-size content (fast guided filter): much faster on big pictures, strokes at the "
         "working size's scale, edges the photo's. 0: off (the network runs at the output size).")]
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
JsonSummary = Annotated[bool, typer.Option("--json", help="One JSON summary object on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (and --json objects).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks with errors.")]


@dataclass(frozen=True)
class ImageOptions:
    """The options that shape each output picture, as given."""

    alpha: float
    content_size: int
    style_size: int
    crop: bool = False
    preserve_color: bool = False
    luminance_only: bool = False
    quality: int = images.DEFAULT_QUALITY
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    overwrite: bool = False
    work_size: int = 0

    def settings(self) -> jobs.Settings:
        """What the core takes: the two colour flags as one mode (both at once is a usage error),
        and 0 pixels as no limit."""
        return jobs.Settings(alpha=self.alpha, content_size=self.content_size, style_size=self.style_size,
                             crop=self.crop, color_mode=color.mode_from_flags(self.preserve_color,
                                                                              self.luminance_only),
                             max_pixels=self.max_pixels or None, quality=self.quality, overwrite=self.overwrite,
                             work_size=self.work_size)


@dataclass(frozen=True)
class ExecutionOptions:
    """Where and how the networks run, as given."""

    device: str = "auto"
    precision: str = "fp32"
    tile: int = 0
    max_memory: str = "auto"
    compile: bool = False
    batch_size: int = 0

    def resolve(self) -> Execution:
        """The execution, resolved and checked once; a GPU that is there but unusable is said once."""
        execution = Execution.resolve(self.device, self.precision, tile=self.tile or None,  # type: ignore[arg-type]
                                      max_memory=self.max_memory, batch_size=self.batch_size,
                                      compile=self.compile)
        if self.device == "auto" and execution.device.type == "cpu":
            problem = device.unusable_gpu()
            if problem is not None:
                warn(f"{problem}; running on the CPU")
        return execution
