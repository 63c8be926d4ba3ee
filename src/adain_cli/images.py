"""Image files in and out: decoding, orientation, colour spaces, resizing, atomic saving.

This is the only module that knows the pixel convention: tensors are float32 sRGB in
[0, 1], shaped (1, 3, H, W); files are 8-bit RGB, read and written as sRGB. A photo
with an embedded colour profile (Adobe RGB from a camera, Display P3 from a phone,
ProPhoto from an editor) is converted to sRGB as it is decoded, so colour preservation
and alpha blends work on the colours the photo shows; outputs are written untagged,
which every viewer reads as sRGB.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from torch import Tensor

from .atomic import atomic_write
from .errors import ImageError, ImageTooLarge, NotAnImage, OutputError, UsageError

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
# For error messages: "bmp, jpeg, jpg, png, tif, tiff, webp".
KNOWN_EXTENSIONS = ", ".join(sorted(s.lstrip(".") for s in FORMATS))

# The formats read, on purpose: what photos and paintings come as. Pillow opens forty more
# (DDS, ICO, TGA, PCX, SGI, EPS...), whose rarely used decoders are where its crashes live; a
# file in any of them is refused as not in a supported format. JPEG covers camera MPO files;
# GIF and animated WebP give their first frame; AVIF where this Pillow was built with it.
_READ_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "TIFF", "BMP", "GIF")
Image.init()
INPUT_FORMATS = tuple(f for f in _READ_FORMATS if f in Image.OPEN)
# Names a folder or tree is searched for, every command alike.
IMAGE_SUFFIXES = frozenset(FORMATS) | {".gif"} | ({".avif"} if "AVIF" in INPUT_FORMATS else set())
# For error messages: "png, jpeg, webp, avif, tiff, bmp, gif".
SUPPORTED_FORMATS = ", ".join(f.lower() for f in INPUT_FORMATS)

# Smallest side the network takes: relu4_1 must be at least 2x2 for its reflection padding.
MIN_SIDE = 16
# Pillow's own decompression-bomb threshold (about 89 megapixels); --max-pixels changes it.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_QUALITY = 95
# zlib level for PNG outputs: 3 writes a 1080p image 2.7x faster than Pillow's default 6, for
# files about 10% larger (BENCHMARKS.md, "Fixed costs"); the pixels are the same at any level.
PNG_COMPRESS_LEVEL = 3

# Transparent pixels are composited onto white before stylizing (documented in the README).
_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
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


def load_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               shorter_side: int | None = None) -> Image.Image:
    """Decode an image file into upright 8-bit sRGB, or raise ImageError saying why not.

    `max_pixels` guards against decompression bombs; None allows any size. `shorter_side`
    lets a large JPEG decode at reduced scale (see `decode_upright`).
    """
    return _srgb(decode_upright(path, max_pixels, shorter_side), path)


def load_bytes(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               shorter_side: int | None = None) -> Image.Image:
    """An image file's bytes (an upload) decoded as `load_image` decodes a file, in memory;
    errors name it `name`."""
    if not data:
        raise NotAnImage(name, "empty file (0 bytes)")
    return _srgb(_decode(io.BytesIO(data), name, max_pixels, shorter_side), name)


def peek_size(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """An image file's width and height from its header, decoding nothing; the errors of
    `load_bytes` for a file that is not a supported image or is over `max_pixels`."""
    if not data:
        raise NotAnImage(name, "empty file (0 bytes)")
    with _opened(io.BytesIO(data), name, max_pixels) as image:
        return image.size


def peek_file_size(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """An image file's width and height from its header (before EXIF rotation), decoding nothing;
    the errors of `load_image`."""
    with _opened(Path(path), path, max_pixels) as image:
        return image.size


def _srgb(image: Image.Image, name: Path | str) -> Image.Image:
    try:
        return to_rgb(image)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:  # a colour transform LittleCMS refuses, say
        raise ImageError(name, f"cannot convert its colours to sRGB ({exc})") from exc


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
        raise NotAnImage(path, "empty file (0 bytes)")
    return _decode(path, path, max_pixels, shorter_side)


def _decode(source: Path | BinaryIO, name: Path | str, max_pixels: int | None,
            shorter_side: int | None) -> Image.Image:
    with _opened(source, name, max_pixels) as image:
        width, height = image.size
        scale = shorter_side / min(width, height) if shorter_side else 1.0
        if image.format == "JPEG" and scale < 1:
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()
        return ImageOps.exif_transpose(image)


@contextmanager
def _opened(source: Path | BinaryIO, name: Path | str, max_pixels: int | None) -> Iterator[Image.Image]:
    """The image opened (its header read) and checked against `max_pixels`; Pillow's errors
    inside the block, decoding included, become ImageErrors naming `name`."""
    try:
        with _pillow_bomb_check_disabled():
            image = Image.open(source, formats=INPUT_FORMATS)
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    name,
                    f"{width}x{height} is {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (possible decompression bomb; raise --max-pixels to allow)",
                )
            yield image
    except UnidentifiedImageError as exc:
        raise NotAnImage(name, f"not an image file in a supported format ({SUPPORTED_FORMATS})") from exc
    except NotImplementedError as exc:  # a variant of a format Pillow's decoder does not implement
        raise NotAnImage(name, f"not a supported image ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError/ValueError.
        raise ImageError(name, f"corrupt or truncated image ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image to 8-bit sRGB: deep images scaled by their real range, an embedded
    colour profile converted, alpha composited onto white."""
    profile = image.info.get("icc_profile")
    image = _eight_bit(image)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb = _to_srgb(image.convert("L") if image.mode == "LA" else rgba.convert("RGB"), profile)
        rgb.putalpha(rgba.getchannel("A"))
        background = Image.new("RGBA", rgb.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgb).convert("RGB")
    if image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    return _to_srgb(image, profile)


def _eight_bit(image: Image.Image) -> Image.Image:
    """Deep single-channel images to 8 bits, scaled by their real range instead of clipped:
    16-bit integers by 65535; 32-bit integers by the smallest of the 8, 16 and 32-bit ranges
    that holds their values; floats by 1, or by their maximum when they exceed 1."""
    if image.mode == "F":
        high = image.getextrema()[1]
        scale = 255.0 if high <= 1 else 255.0 / high
        return image.point(lambda v: v * scale + 0.5).convert("L")
    if image.mode.startswith("I;16"):
        full = 65535
    elif image.mode == "I":
        high = image.getextrema()[1]
        full = next(r for r in (255, 65535, 2**32 - 1) if high <= r)
    else:
        return image
    return image.convert("I").point(lambda v: v * (255.0 / full) + 0.5).convert("L")


def _to_srgb(image: Image.Image, profile: bytes | None) -> Image.Image:
    """`image` (L, RGB or CMYK) in sRGB, converted from its embedded profile where it has one
    that is not already sRGB; a profile that cannot be read is ignored, as viewers do."""
    transform = _transform_to_srgb(profile, image.mode) if profile else None
    if transform is not None:
        return ImageCms.applyTransform(image, transform)
    return image if image.mode == "RGB" else image.convert("RGB")


_SRGB = ImageCms.createProfile("sRGB")
_PROFILE_SPACES = {"RGB": "RGB ", "L": "GRAY", "CMYK": "CMYK"}


@lru_cache(maxsize=16)
def _transform_to_srgb(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from `profile` to sRGB for images of `mode`; None where there is nothing to
    convert (an sRGB profile, one for another colour space, or one that cannot be read)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if source.profile.xcolor_space != _PROFILE_SPACES[mode]:
            return None
        # NOCACHE: decoding threads share transforms, and LittleCMS's one-pixel cache is not thread-safe.
        transform = ImageCms.buildTransform(source, _SRGB, mode, "RGB", flags=ImageCms.Flags.NOCACHE)
    except (ImageCms.PyCMSError, OSError, ValueError, KeyError):
        return None
    return None if _is_identity(transform, mode) else transform


def _is_identity(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    # An sRGB profile under another name (cameras embed their own copies): converting would only
    # add rounding, so a profile that moves no colour by more than one 8-bit step is left alone.
    if mode == "CMYK":
        return False
    levels = bytes(range(0, 256, 15))  # 18 levels per channel
    if mode == "L":
        probe = Image.frombytes("L", (len(levels), 1), levels)
    else:
        pixels = bytes(c for r in levels for g in levels for b in levels for c in (r, g, b))
        probe = Image.frombytes("RGB", (len(levels) ** 3, 1), pixels)
    converted = ImageCms.applyTransform(probe, transform)
    expected = probe.convert("RGB")
    return max(abs(a - b) for a, b in zip(converted.tobytes(), expected.tobytes(), strict=True)) <= 1


def resize_shorter_side(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Image.Image:
    """Resize so the shorter side is `size`, keeping the aspect ratio; 0 keeps the image.

    The long side is truncated as torchvision's Resize(int) does (the reference port).
    """
    if size == 0:
        return image
    new = resized_size(*image.size, size)
    if new == image.size:
        return image
    return image.resize(new, resample, reducing_gap=None)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side `size`: the long side truncated, as torchvision's
    Resize(int) does (the reference port)."""
    short, long = sorted((width, height))
    scaled_long = int(size * long / short)
    return (size, scaled_long) if width <= height else (scaled_long, size)


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


# --- masks: region labels, read as data ----------------------------------------------------

def load_mask(path: Path, content_size: tuple[int, int], size: int, crop: bool, regions: int,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """The region index (0 .. regions-1) of each pixel of the prepared content, (H, W) int64.

    `content_size` is the content's original (width, height); the mask must have its
    aspect ratio and is then resized and cropped exactly as the content is. A palette
    (indexed) PNG gives one region per palette index used, in increasing index order;
    any other image gives two regions, thresholded at 50% grey: white is region 0.
    A mask is data, not a picture: no colour management, no scaling of its levels.
    """
    try:
        mask = decode_upright(path, max_pixels)
    except ImageError as exc:
        raise UsageError(f"unreadable mask: {exc}") from None
    (mw, mh), (cw, ch) = mask.size, content_size
    if abs(mw * ch - mh * cw) > 0.01 * mh * cw:
        raise UsageError(f"{path}: mask is {mw}x{mh} but the content is {cw}x{ch}: the aspect ratios differ "
                         "(masks are not stretched)")
    labels, used = _mask_labels(mask)
    if used != regions:
        kind = "palette indices" if mask.mode == "P" else "regions (white and black)"
        raise UsageError(f"{path}: mask has {used} {kind} but {regions} styles were given")
    labels = resize_shorter_side(labels.resize(content_size, Image.Resampling.NEAREST), size,
                                 Image.Resampling.NEAREST)
    if crop:
        labels = center_crop_square(labels)
    width, height = labels.size
    return torch.frombuffer(bytearray(labels.tobytes()), dtype=torch.uint8).view(height, width).long()


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Region labels (H, W) from `load_mask` scaled to `size` (height, width) as masks are
    scaled, nearest neighbour: a working size's labels (see guided.py)."""
    height, width = size
    if labels.shape == (height, width):
        return labels
    image = Image.frombytes("L", (labels.shape[1], labels.shape[0]), labels.to(torch.uint8).numpy().tobytes())
    image = image.resize((width, height), Image.Resampling.NEAREST)
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, width).long()


def _mask_labels(mask: Image.Image) -> tuple[Image.Image, int]:
    """Each pixel's region as an "L" image, and how many regions the mask has."""
    if mask.mode == "P":
        used = sorted(index for _, index in mask.getcolors(256) or [])
        lookup = {index: region for region, index in enumerate(used)}
        return mask.point([lookup.get(i, 0) for i in range(256)], mode="L"), len(used)
    return mask.convert("L").point(lambda v: 0 if v >= 128 else 1), 2


def to_tensor(image: Image.Image) -> Tensor:
    """Image -> float32 RGB (1, 3, H, W) in [0, 1]; other modes are converted as load_image does."""
    return from_8bit(to_pixels(image))


def to_pixels(image: Image.Image) -> Tensor:
    """Image -> its 8-bit RGB pixels as (1, 3, H, W), a view of them (H, W, 3) in memory: what
    `to_tensor` converts, for a caller that converts later (on the thread that runs the network,
    where torch's parallel work does not compete with it)."""
    import numpy  # torchvision's dependency; imported here, where it is needed

    hwc = torch.from_numpy(numpy.array(to_rgb(image)))  # a writable copy of the pixels, shared with the tensor
    return hwc.permute(2, 0, 1).unsqueeze(0)


def pixels_to_image(pixels: Tensor) -> Image.Image:
    """8-bit (1, 3, H, W) or (3, H, W) RGB on the CPU -> an image (what `to_image` makes of its floats)."""
    chw = pixels.squeeze(0) if pixels.dim() == 4 else pixels
    return Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy())


def from_8bit(pixels: Tensor) -> Tensor:
    """8-bit values (any shape, any device) as floats in [0, 1]: the network's pixel range."""
    return pixels.float().div_(255)


def to_8bit(tensor: Tensor) -> Tensor:
    """Floats in [0, 1] (any shape, any device) as 8-bit values: clamped and rounded to nearest."""
    return tensor.float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


# Rows converted to 8 bits at a time: bounds to_image's float temporaries on huge images.
_ROWS_PER_CHUNK = 256


def to_image(tensor: Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> 8-bit RGB image, clamped and rounded."""
    chw = tensor.detach().squeeze(0) if tensor.dim() == 4 else tensor.detach()
    height, width = chw.shape[-2:]
    hwc = torch.empty(height, width, 3, dtype=torch.uint8)
    for top in range(0, height, _ROWS_PER_CHUNK):
        rows = to_8bit(chw[:, top:top + _ROWS_PER_CHUNK])
        hwc[top:top + _ROWS_PER_CHUNK] = rows.permute(1, 2, 0).cpu()
    # Through NumPy (torchvision's dependency): bytes(storage) copies byte by byte, ~1000x slower.
    return Image.fromarray(hwc.numpy())


def format_for(path: Path) -> str:
    """The Pillow format an output extension asks for."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise OutputError(path, f"unknown output extension {path.suffix!r} (use one of {KNOWN_EXTENSIONS})") from None


def write_image(image: Image.Image, handle: BinaryIO, fmt: str, quality: int = DEFAULT_QUALITY) -> None:
    """Encode in a Pillow format ("PNG", "JPEG", ...) with the options every output gets."""
    options: dict[str, int] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "PNG":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    image.save(handle, format=fmt, **options)


def encoded(image: Image.Image, fmt: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """`write_image` into bytes (an answer to send)."""
    buffer = io.BytesIO()
    write_image(image, buffer, fmt, quality)
    return buffer.getvalue()


def save_image(image: Image.Image, path: Path, quality: int = DEFAULT_QUALITY) -> None:
    """Write atomically (see `atomic_write`): a failure leaves neither a partial file nor a
    damaged existing one."""
    path = Path(path)
    fmt = format_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            write_image(image, handle, fmt, quality)
    except OSError as exc:
        raise OutputError.cannot_write(path, exc) from exc


# --- contact sheets ---------------------------------------------------------------------------

def contact_sheet(tiles: list[Tensor], columns: int, labels: list[str] | None = None) -> Image.Image:
    """Tiles (1, 3, H, W) of one size in a grid with a small white border, an optional caption under each."""
    from torchvision.utils import make_grid  # imported here: torchvision is slow to import

    cells = [tile.detach().float().cpu().clamp(0, 1)[0] for tile in tiles]
    if labels is not None:
        cells = [to_tensor(_caption(to_image(cell), text))[0]
                 for cell, text in zip(cells, labels, strict=True)]
    return to_image(make_grid(cells, nrow=columns, padding=4, pad_value=1.0))


def _caption(image: Image.Image, text: str) -> Image.Image:
    font = ImageFont.load_default(size=max(10, image.height // 24))
    strip = int(font.size * 1.6)
    captioned = Image.new("RGB", (image.width, image.height + strip), "white")
    captioned.paste(image, (0, 0))
    ImageDraw.Draw(captioned).text((image.width // 2, image.height + strip // 2), text, fill="black",
                                   font=font, anchor="mm")
    return captioned
