"""Image files in and out: decoding, orientation, colour modes, resizing, atomic saving.

This is the only module that knows the pixel convention: tensors are float32 RGB in
[0, 1], shaped (1, 3, H, W); files are 8-bit RGB.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from torch import Tensor

from .atomic import atomic_write
from .errors import ImageError, OutputError, UsageError

# Output format by file extension.
FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
IMAGE_SUFFIXES = frozenset(FORMATS)
# For error messages: "bmp, jpeg, jpg, png, tif, tiff, webp".
KNOWN_EXTENSIONS = ", ".join(sorted(s.lstrip(".") for s in FORMATS))

# Smallest side the network takes: relu4_1 must be at least 2x2 for its reflection padding.
MIN_SIDE = 16
# Pillow's own decompression-bomb threshold (about 89 megapixels); --max-pixels changes it.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_QUALITY = 95

# Transparent pixels are composited onto white before stylizing (documented in the README).
_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_pillow_limit_lock = threading.Lock()


@contextmanager
def _pillow_bomb_check_disabled() -> Iterator[None]:
    # Pillow refuses images over 2x its limit inside Image.open, before we can apply ours.
    # Our own check (with the user's limit) replaces it for the duration of the open.
    with _pillow_limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file into upright 8-bit RGB, or raise ImageError saying why not.

    `max_pixels` guards against decompression bombs; None allows any size.
    """
    return to_rgb(decode_upright(path, max_pixels))


def decode_upright(
    path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, shorter_side: int | None = None
) -> Image.Image:
    """Decode an image file in its own mode, EXIF orientation applied; ImageError saying why not.

    `shorter_side` lets a large JPEG decode at a reduced DCT scale (Pillow's draft mode),
    the smallest one that keeps its shorter side at least that long: much faster.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with _pillow_bomb_check_disabled():
            image = Image.open(path)
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    path,
                    f"{width}x{height} is {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (possible decompression bomb; raise --max-pixels to allow)",
                )
            scale = shorter_side / min(width, height) if shorter_side else 1.0
            if image.format == "JPEG" and scale < 1:
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()
            return ImageOps.exif_transpose(image)
    except UnidentifiedImageError as exc:
        raise ImageError(path, "not an image file Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError/ValueError.
        raise ImageError(path, f"corrupt or truncated image ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: alpha onto white, 16-bit scaled down, not clipped."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # convert("L") would clip 16-bit values at 255; scale 0..65535 to 0..255 instead.
        image = image.convert("I").point(lambda v: v / 257 + 0.5).convert("L")
    elif image.mode == "F":
        image = image.point(lambda v: v * 255 + 0.5).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_shorter_side(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Image.Image:
    """Resize so the shorter side is `size`, keeping the aspect ratio; 0 keeps the image.

    The long side is truncated as torchvision's Resize(int) does (the reference port).
    """
    if size == 0:
        return image
    width, height = image.size
    short, long = sorted((width, height))
    scaled_long = int(size * long / short)
    new = (size, scaled_long) if width <= height else (scaled_long, size)
    if new == image.size:
        return image
    return image.resize(new, resample, reducing_gap=None)


def center_crop_square(image: Image.Image) -> Image.Image:
    """The largest centred square."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def prepare(image: Image.Image, size: int, crop: bool, path: Path | str = "<image>") -> Image.Image:
    """Resize (and optionally crop) as the network will see it; too small is an ImageError."""
    image = resize_shorter_side(image, size)
    if crop:
        image = center_crop_square(image)
    if min(image.size) < MIN_SIDE:
        width, height = image.size
        raise ImageError(path, f"{width}x{height} is too small: the shorter side must be at least {MIN_SIDE} px")
    return image


def load_tensor(
    path: Path, size: int, crop: bool, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Tensor:
    """A file decoded, resized as the network needs it, as a (1, 3, H, W) tensor."""
    return to_tensor(prepare(load_image(path, max_pixels), size, crop, path))


def load_mask(
    path: Path, content_size: tuple[int, int], size: int, crop: bool, regions: int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Tensor:
    """The region index (0 .. regions-1) of each pixel of the prepared content, (H, W).

    `content_size` is the content's original (width, height); the mask must have its
    aspect ratio and is then resized and cropped exactly as the content is. A palette
    (indexed) PNG gives one region per palette index used, in increasing index order;
    any other image gives two regions, thresholded at 50% grey: white is region 0.
    """
    try:
        mask = decode_upright(path, max_pixels)
    except ImageError as exc:
        raise UsageError(f"unreadable mask: {exc}") from None
    (mw, mh), (cw, ch) = mask.size, content_size
    if abs(mw * ch - mh * cw) > 0.01 * mh * cw:
        raise UsageError(f"{path}: mask is {mw}x{mh} but the content is {cw}x{ch}: the aspect ratios differ "
                         "(masks are not stretched)")
    if mask.mode == "P":
        used = sorted(index for _, index in mask.getcolors(256) or [])
        lookup = {index: region for region, index in enumerate(used)}
        labels = mask.point([lookup.get(i, 0) for i in range(256)], mode="L")
    else:
        used = [255, 0]
        labels = mask.convert("L").point(lambda v: 0 if v >= 128 else 1)
    if len(used) != regions:
        kind = "palette indices" if mask.mode == "P" else "regions (white and black)"
        raise UsageError(f"{path}: mask has {len(used)} {kind} but {regions} styles were given")
    labels = labels.resize(content_size, Image.Resampling.NEAREST)
    labels = resize_shorter_side(labels, size, Image.Resampling.NEAREST)
    if crop:
        labels = center_crop_square(labels)
    width, height = labels.size
    return torch.frombuffer(bytearray(labels.tobytes()), dtype=torch.uint8).view(height, width).long()


def to_tensor(image: Image.Image) -> Tensor:
    """Image -> float32 RGB (1, 3, H, W) in [0, 1]; other modes are converted as load_image does."""
    import numpy  # torchvision's dependency; imported here, where it is needed

    if image.mode != "RGB":
        image = to_rgb(image)
    hwc = torch.from_numpy(numpy.array(image))  # a writable copy of the pixels, shared with the tensor
    return hwc.permute(2, 0, 1).unsqueeze(0).float().div_(255)


# Rows converted to 8 bits at a time: bounds to_image's float temporaries on huge images.
_ROWS_PER_CHUNK = 256


def to_image(tensor: Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> 8-bit RGB image, clamped and rounded."""
    chw = tensor.detach().squeeze(0) if tensor.dim() == 4 else tensor.detach()
    height, width = chw.shape[-2:]
    hwc = torch.empty(height, width, 3, dtype=torch.uint8)
    for top in range(0, height, _ROWS_PER_CHUNK):
        rows = chw[:, top:top + _ROWS_PER_CHUNK].float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        hwc[top:top + _ROWS_PER_CHUNK] = rows.permute(1, 2, 0).cpu()
    # Through NumPy (torchvision's dependency): bytes(storage) copies byte by byte, ~1000x slower.
    return Image.fromarray(hwc.numpy())


def contact_sheet(tiles: list[Tensor], columns: int, labels: list[str] | None = None) -> Image.Image:
    """Tiles (1, 3, H, W) of one size in a grid with a small white border, an optional caption under each."""
    from torchvision.utils import make_grid  # imported here: torchvision is slow to import

    cells = [tile.detach().float().cpu().clamp(0, 1)[0] for tile in tiles]
    if labels is not None:
        cells = [to_tensor(_caption(to_image(cell), text))[0] for cell, text in zip(cells, labels, strict=True)]
    return to_image(make_grid(cells, nrow=columns, padding=4, pad_value=1.0))


def _caption(image: Image.Image, text: str) -> Image.Image:
    font = ImageFont.load_default(size=max(10, image.height // 24))
    strip = int(font.size * 1.6)
    captioned = Image.new("RGB", (image.width, image.height + strip), "white")
    captioned.paste(image, (0, 0))
    ImageDraw.Draw(captioned).text((image.width // 2, image.height + strip // 2), text, fill="black",
                                   font=font, anchor="mm")
    return captioned


def format_for(path: Path) -> str:
    """The Pillow format an output extension asks for."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise OutputError(path, f"unknown output extension {path.suffix!r} (use one of {KNOWN_EXTENSIONS})") from None


def save_image(image: Image.Image, path: Path, quality: int = DEFAULT_QUALITY) -> None:
    """Write atomically (see `atomic_write`): a failure leaves neither a partial file nor a
    damaged existing one."""
    path = Path(path)
    fmt = format_for(path)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            image.save(handle, format=fmt, **options)
    except OSError as exc:
        raise OutputError.cannot_write(path, exc) from exc
