"""Image files: every colour mode becomes correct RGB, bad files get one clear reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
import torch
from conftest import ADOBE_RGB, DISPLAY_P3, icc_profile, synthetic_image
from PIL import Image, ImageCms

from adain_cli import ImageError, OutputError, images


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny file whose PNG header claims a huge image: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def pixel(path: Path, xy=(0, 0)) -> tuple[int, int, int]:
    return images.load_image(path).getpixel(xy)


def test_rgb_png_round_trips(tmp_path: Path):
    original = synthetic_image(20, 10)
    original.save(tmp_path / "a.png")
    loaded = images.load_image(tmp_path / "a.png")
    assert loaded.mode == "RGB" and loaded.tobytes() == original.tobytes()


def test_grayscale_becomes_equal_rgb_channels(tmp_path: Path):
    Image.new("L", (4, 4), 77).save(tmp_path / "g.png")
    assert pixel(tmp_path / "g.png") == (77, 77, 77)


def test_palette_image_becomes_its_colours(tmp_path: Path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 30, 90] + [0, 0, 0] * 254)
    image.save(tmp_path / "p.png")
    assert pixel(tmp_path / "p.png") == (200, 30, 90)


def test_transparent_palette_entries_become_white(tmp_path: Path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] * 256)
    image.save(tmp_path / "pt.png", transparency=0)
    assert pixel(tmp_path / "pt.png") == (255, 255, 255)


def test_rgba_alpha_is_composited_onto_white(tmp_path: Path):
    image = Image.new("RGBA", (2, 1))
    image.putpixel((0, 0), (255, 0, 0, 255))
    image.putpixel((1, 0), (255, 0, 0, 0))
    image.save(tmp_path / "a.png")
    assert pixel(tmp_path / "a.png", (0, 0)) == (255, 0, 0)
    assert pixel(tmp_path / "a.png", (1, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path):
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    r, g, b = pixel(tmp_path / "c.jpg")
    assert r < 10 and g > 245 and b > 245  # pure cyan


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    image = Image.new("I;16", (2, 1))
    image.putpixel((0, 0), 65535)
    image.putpixel((1, 0), 32768)
    image.save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert pixel(tmp_path / "deep.png", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / "deep.png", (1, 0)) == (128, 128, 128)


def test_16_bit_rgb_png_becomes_8_bit_rgb(tmp_path: Path):
    # 48-bit PNG written by hand: Pillow cannot write one.
    width, height = 2, 1
    rows = b"\x00" + struct.pack(">6H", 65535, 0, 0, 0, 32896, 65535)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    (tmp_path / "rgb48.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                         + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    assert pixel(tmp_path / "rgb48.png", (0, 0)) == (255, 0, 0)
    assert pixel(tmp_path / "rgb48.png", (1, 0)) == (0, 128, 255)


def as_srgb(image: Image.Image, profile: bytes) -> Image.Image:
    """What a colour-managed viewer shows: the pixels converted from their profile to sRGB."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")


@pytest.mark.parametrize("name,space", [("Adobe RGB (1998)", ADOBE_RGB), ("Display P3", DISPLAY_P3)])
def test_a_photo_with_a_wide_gamut_profile_is_read_as_the_srgb_it_shows(tmp_path: Path, name, space):
    profile = icc_profile(name, *space)
    original = synthetic_image(24, 16, seed=3)
    original.save(tmp_path / "tagged.png", icc_profile=profile)
    loaded = images.load_image(tmp_path / "tagged.png")
    expected = as_srgb(original, profile)
    assert loaded.tobytes() == expected.tobytes()
    assert loaded.tobytes() != original.tobytes()  # the profile moves these colours
    assert images.to_tensor(Image.open(tmp_path / "tagged.png")).equal(images.to_tensor(expected))


def test_an_srgb_profile_changes_nothing(tmp_path: Path):
    original = synthetic_image(24, 16, seed=4)
    original.save(tmp_path / "srgb.png", icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    assert images.load_image(tmp_path / "srgb.png").tobytes() == original.tobytes()


def test_a_transparent_photo_with_a_profile_is_converted_then_composited(tmp_path: Path):
    profile = icc_profile("Adobe RGB (1998)", *ADOBE_RGB)
    image = Image.new("RGBA", (2, 1), (150, 100, 60, 255))
    image.putpixel((1, 0), (150, 100, 60, 0))
    image.save(tmp_path / "a.png", icc_profile=profile)
    loaded = images.load_image(tmp_path / "a.png")
    assert loaded.getpixel((0, 0)) == as_srgb(Image.new("RGB", (1, 1), (150, 100, 60)), profile).getpixel((0, 0))
    assert loaded.getpixel((1, 0)) == (255, 255, 255)


def test_an_unreadable_profile_is_ignored_as_viewers_do(tmp_path: Path):
    original = synthetic_image(8, 8, seed=5)
    original.save(tmp_path / "broken.png", icc_profile=b"not a colour profile")
    assert images.load_image(tmp_path / "broken.png").tobytes() == original.tobytes()


def test_colours_that_cannot_be_converted_are_one_clear_error(tmp_path: Path, monkeypatch):
    synthetic_image(8, 8).save(tmp_path / "odd.png", icc_profile=icc_profile("Adobe RGB (1998)", *ADOBE_RGB))

    def refuse(*args, **kwargs):
        raise ImageCms.PyCMSError("cannot apply transform")

    monkeypatch.setattr(ImageCms, "applyTransform", refuse)
    with pytest.raises(ImageError, match="odd.png: cannot convert its colours to sRGB"):
        images.load_image(tmp_path / "odd.png")


def test_32_bit_integer_images_are_scaled_by_the_range_their_values_use(tmp_path: Path):
    eight_bit_values = Image.new("I", (2, 1))
    eight_bit_values.putpixel((0, 0), 200)
    eight_bit_values.putpixel((1, 0), 255)
    eight_bit_values.save(tmp_path / "i8.tif")
    assert pixel(tmp_path / "i8.tif", (0, 0)) == (200, 200, 200)  # not 200/65535 of white
    sixteen_bit_values = Image.new("I", (2, 1))
    sixteen_bit_values.putpixel((0, 0), 32768)
    sixteen_bit_values.putpixel((1, 0), 65535)
    sixteen_bit_values.save(tmp_path / "i16.tif")
    assert pixel(tmp_path / "i16.tif", (0, 0)) == (128, 128, 128)


def test_float_images_are_scaled_by_their_real_range(tmp_path: Path):
    unit = Image.new("F", (2, 1), 0.5)
    unit.putpixel((1, 0), 1.0)
    unit.save(tmp_path / "unit.tif")
    assert pixel(tmp_path / "unit.tif", (0, 0)) == (128, 128, 128)
    wide = Image.new("F", (2, 1), 100.0)  # values on a 0-255 scale, as some tools write them
    wide.putpixel((1, 0), 255.0)
    wide.save(tmp_path / "wide.tif")
    assert pixel(tmp_path / "wide.tif", (0, 0)) == (100, 100, 100)  # not clipped to white
    assert pixel(tmp_path / "wide.tif", (1, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path):
    # Stored landscape, tagged "rotate 90 clockwise": a phone's portrait photo.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 20))  # red at the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    upright = images.load_image(tmp_path / "phone.jpg")
    assert upright.size == (20, 40)
    r, _, b = upright.getpixel((10, 2))  # the left edge is now the top
    assert r > 200 and b < 60


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageError, match="nope.png: no such file"):
        images.load_image(tmp_path / "nope.png")


def test_zero_byte_file(tmp_path: Path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg: empty file \(0 bytes\)"):
        images.load_image(tmp_path / "empty.jpg")


def test_text_file_named_jpg(tmp_path: Path):
    (tmp_path / "notes.jpg").write_text("shopping list: eggs\n")
    with pytest.raises(ImageError, match="notes.jpg: not an image file"):
        images.load_image(tmp_path / "notes.jpg")


def test_truncated_jpeg(tmp_path: Path):
    synthetic_image(64, 64).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg: corrupt or truncated image"):
        images.load_image(tmp_path / "cut.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path):
    bomb = png_claiming_size(tmp_path / "bomb.png", 50_000, 50_000)
    with pytest.raises(ImageError, match=r"bomb.png: 50000x50000 is 2,500,000,000 pixels, over the limit"):
        images.load_image(bomb)


def test_the_pixel_limit_can_be_raised_or_lifted(tmp_path: Path):
    synthetic_image(64, 64).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        images.load_image(tmp_path / "a.png", max_pixels=1000)
    assert images.load_image(tmp_path / "a.png", max_pixels=4096).size == (64, 64)
    # With no limit even the bomb's header passes; its missing data is then the error.
    bomb = png_claiming_size(tmp_path / "bomb.png", 50_000, 50_000)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        images.load_image(bomb, max_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == images.DEFAULT_MAX_PIXELS  # Pillow's global is restored


def test_too_small_image_names_the_minimum(tmp_path: Path):
    with pytest.raises(ImageError, match=r"tiny.png: 12x30 is too small: the shorter side must be at least 16 px"):
        images.prepare(Image.new("RGB", (12, 30)), 0, False, "tiny.png")


def test_resize_sets_the_shorter_side_and_keeps_the_aspect():
    assert images.resize_shorter_side(Image.new("RGB", (300, 200)), 100).size == (150, 100)
    assert images.resize_shorter_side(Image.new("RGB", (200, 301)), 100).size == (100, 150)
    assert images.resize_shorter_side(Image.new("RGB", (30, 20)), 0).size == (30, 20)


def test_center_crop_takes_the_middle_square():
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 255, 255), (10, 0, 20, 10))
    square = images.center_crop_square(image)
    assert square.size == (10, 10) and square.getpixel((0, 0)) == (255, 255, 255)


# --- masks: region labels read as data ------------------------------------------------------

def test_mask_is_thresholded_at_half_grey(tmp_path):
    gradient = Image.linear_gradient("L").resize((64, 64))  # 0 at the top to 255 at the bottom
    gradient.save(tmp_path / "gradient.png")
    labels = images.load_mask(tmp_path / "gradient.png", (64, 64), 0, False, 2)
    assert labels[0].tolist() == [1] * 64 and labels[-1].tolist() == [0] * 64
    assert 28 <= int((labels[:, 0] == 1).sum()) <= 36


def test_a_mask_is_resized_and_cropped_as_its_content_is(tmp_path):
    mask = Image.new("L", (40, 20), 255)
    mask.paste(0, (20, 0, 40, 20))  # the right half black: region 1
    mask.save(tmp_path / "halves.png")
    labels = images.load_mask(tmp_path / "halves.png", (80, 40), 16, True, 2)  # content 80x40 -> 32x16 -> 16x16
    assert labels.shape == (16, 16) and labels.dtype == torch.int64
    assert labels[:, :8].unique().tolist() == [0] and labels[:, 8:].unique().tolist() == [1]


def test_tensor_conversion_owns_the_pixel_range():
    image = synthetic_image(7, 5)
    tensor = images.to_tensor(image)
    assert tensor.shape == (1, 3, 5, 7) and tensor.dtype == torch.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    assert images.to_image(tensor).tobytes() == image.tobytes()
    assert images.to_image(torch.full((1, 3, 2, 2), 7.0)).getpixel((0, 0)) == (255, 255, 255)
    assert images.to_image(torch.full((1, 3, 2, 2), -1.0)).getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP"),
                                     ("bmp", "BMP"), ("tif", "TIFF"), ("TIFF", "TIFF")])
def test_save_picks_the_format_from_the_extension(tmp_path: Path, ext: str, fmt: str):
    images.save_image(synthetic_image(16, 16), tmp_path / f"out.{ext}")
    assert Image.open(tmp_path / f"out.{ext}").format == fmt


def test_save_refuses_an_unknown_extension(tmp_path: Path):
    with pytest.raises(OutputError, match="unknown output extension '.gif'"):
        images.save_image(synthetic_image(16, 16), tmp_path / "out.gif")


def test_failed_save_keeps_the_existing_file_and_leaves_no_partial(tmp_path: Path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OutputError, match="out.png: cannot write \\(No space left on device\\)"):
        images.save_image(synthetic_image(16, 16), target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_into_a_path_under_a_file_fails_cleanly(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        images.save_image(synthetic_image(16, 16), tmp_path / "file" / "out.png")


def test_interrupted_save_keeps_the_existing_file_and_leaves_no_partial(tmp_path: Path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")

    def interrupted_save(self, fp, *args, **kwargs):
        fp.write(b"half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        images.save_image(synthetic_image(16, 16), target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_outputs_get_the_usual_file_permissions(tmp_path: Path):
    import os

    images.save_image(synthetic_image(16, 16), tmp_path / "out.png")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_stale_temporary_that_may_not_be_removed_is_left_without_an_error(tmp_path: Path, monkeypatch):
    from adain_cli.atomic import remove_stale_temporaries

    (tmp_path / ".o.png.0123abcd.tmp").write_bytes(b"another user's, in a shared folder")

    def refused(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    assert remove_stale_temporaries(tmp_path, {"o.png"}) == 0
    assert (tmp_path / ".o.png.0123abcd.tmp").exists()


def test_a_completed_write_syncs_its_directory_after_the_rename(tmp_path: Path, monkeypatch):
    import os
    import stat

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(
        "fsync directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda *a: events.append("rename") or real_replace(*a))
    images.save_image(synthetic_image(16, 16), tmp_path / "out.png")
    assert events == ["fsync file", "rename", "fsync directory"]

