"""Shared fixtures: random weights in the public pytorch-AdaIN layout, and synthetic images.

The layout below is written out from the reference `net.py` by hand, independently of
`adain_cli.model`, so the compatibility test compares two separate descriptions.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from adain_cli import Stylizer

# vgg_normalised.pth: nn.Sequential index -> (out, in, k) for each conv, through relu5_4.
PUBLIC_VGG_CONVS = {
    0: (3, 3, 1),
    2: (64, 3, 3), 5: (64, 64, 3),
    9: (128, 64, 3), 12: (128, 128, 3),
    16: (256, 128, 3), 19: (256, 256, 3), 22: (256, 256, 3), 25: (256, 256, 3),
    29: (512, 256, 3), 32: (512, 512, 3), 35: (512, 512, 3), 38: (512, 512, 3),
    42: (512, 512, 3), 45: (512, 512, 3), 48: (512, 512, 3), 51: (512, 512, 3),
}  # fmt: skip
# decoder.pth
PUBLIC_DECODER_CONVS = {
    1: (256, 512, 3), 5: (256, 256, 3), 8: (256, 256, 3), 11: (256, 256, 3), 14: (128, 256, 3),
    18: (128, 128, 3), 21: (64, 128, 3), 25: (64, 64, 3), 28: (3, 64, 3),
}  # fmt: skip


def public_layout(convs: dict[int, tuple[int, int, int]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (out_ch, in_ch, k) in convs.items():
        shapes[f"{index}.weight"] = (out_ch, in_ch, k, k)
        shapes[f"{index}.bias"] = (out_ch,)
    return shapes


def random_state_dict(convs: dict[int, tuple[int, int, int]], seed: int) -> dict[str, torch.Tensor]:
    """He-initialised random convs: activations keep a sensible scale through the network."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in public_layout(convs).items():
        if key.endswith("weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.01
    return state


@pytest.fixture(autouse=True)
def no_network_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the internet: offline unless a test serves weights on 127.0.0.1."""
    monkeypatch.setenv("ADAIN_OFFLINE", "1")
    monkeypatch.delenv("ADAIN_WEIGHTS_URL", raising=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user cache directory (the style bank's default home) inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache"


def _digest(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory):
    """(vgg_normalised.pth, decoder.pth) with random values in the public layout, made once per
    session and shared (by hard links) with every test: no test may change them in place."""
    folder = tmp_path_factory.mktemp("weights")
    vgg, decoder = folder / "vgg_normalised.pth", folder / "decoder.pth"
    torch.save(random_state_dict(PUBLIC_VGG_CONVS, seed=1), vgg)
    torch.save(random_state_dict(PUBLIC_DECODER_CONVS, seed=2), decoder)
    before = _digest((vgg, decoder))
    yield vgg, decoder
    assert _digest((vgg, decoder)) == before, "a test changed the shared weight files in place"


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to `source` (no 90 MB copy per test), or a copy where links are not possible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@pytest.fixture(scope="session")
def good_files(weights: tuple[Path, Path]) -> dict[str, bytes]:
    """The random weights' bytes by file name, as a download server serves them."""
    return {path.name: path.read_bytes() for path in weights}


@pytest.fixture(scope="session")
def stylizer(weights: tuple[Path, Path]):
    from adain_cli import Stylizer

    return Stylizer.from_files(*weights, device="cpu")


def hold_rendering(stylizer: Stylizer) -> tuple[Stylizer, threading.Event]:
    """A Stylizer of its own (sharing the networks) for an engine whose decoder stage waits for
    the event: work stays in flight until it is set."""
    held = Stylizer(stylizer.encoder, stylizer.decoder, execution=stylizer.execution)
    release = threading.Event()
    real = held.render_batch
    held.render_batch = lambda *args, **kwargs: (release.wait(30), real(*args, **kwargs))[1]  # type: ignore[method-assign]
    return held, release


@pytest.fixture
def weights_home(weights: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ADAIN_HOME pointing at a directory whose weights/ holds the random weights."""
    home = tmp_path / "adain-home"
    (home / "weights").mkdir(parents=True)
    for source in weights:
        link_or_copy(source, home / "weights" / source.name)
    monkeypatch.setenv("ADAIN_HOME", str(home))
    return home


def synthetic_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Smooth colour gradients plus noise: structure for the network, made here, not shipped."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)
    phase = torch.rand(3, generator=gen) * 6.28
    channels = [
        0.5 + 0.4 * torch.sin(6 * xs + 4 * ys * (c + 1) + phase[c]) + 0.1 * torch.rand(height, width, generator=gen)
        for c in range(3)
    ]
    data = (torch.stack(channels, dim=-1).clamp(0, 1) * 255).round().to(torch.uint8)
    image = Image.frombytes("RGB", (width, height), data.numpy().tobytes())
    return image if mode == "RGB" else image.convert(mode)


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    """content/ with three images and style/ with two, of different odd sizes."""
    root = tmp_path / "inputs"
    (root / "content").mkdir(parents=True)
    (root / "style").mkdir()
    for i, size in enumerate([(40, 33), (37, 48), (64, 64)]):
        synthetic_image(*size, seed=i).save(root / "content" / f"c{i}.png")
    for i, size in enumerate([(50, 41), (35, 60)]):
        synthetic_image(*size, seed=10 + i).save(root / "style" / f"s{i}.jpg", quality=95)
    return root


# --- colour profiles ---------------------------------------------------------------------------

D50 = (0.9642, 1.0, 0.8249)
# Colorants (D50-adapted XYZ of the red, green and blue primaries) and tone-curve gamma.
ADOBE_RGB = ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457)), 563 / 256
DISPLAY_P3 = ((0.51512, 0.24120, -0.00105), (0.29198, 0.69225, 0.04189), (0.15710, 0.06657, 0.78407)), 2.2


def icc_profile(description: str, colorants: tuple[tuple[float, float, float], ...], gamma: float) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix and gamma curves), built by hand: no profile
    files ship with the tests, and cameras' and phones' profiles have exactly this shape."""
    def number(value: float) -> bytes:  # s15Fixed16
        return struct.pack(">i", round(value * 65536))

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(number(v) for v in values)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    text = description.encode("ascii") + b"\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3) + bytes(67)),
            (b"wtpt", xyz(D50)), (b"rXYZ", xyz(colorants[0])), (b"gXYZ", xyz(colorants[1])),
            (b"bXYZ", xyz(colorants[2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"test data\0")]
    table, body = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = (struct.pack(">I", start + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + b"".join(number(v) for v in D50)
              + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body



# --- adain serve: an app over a fresh engine, for the serve test modules ---------------------------------

LOCAL = "http://127.0.0.1:8000"  # the server's own address, as a browser on this machine names it


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory):
    """Two paintings for `--styles`, one in a subfolder."""
    from adain_cli import web

    folder = tmp_path_factory.mktemp("paintings")
    (folder / "old").mkdir()
    synthetic_image(36, 36, seed=2).save(folder / "one.png")
    synthetic_image(30, 40, seed=3).save(folder / "old" / "two.png")
    return web.Library.scan(folder)


@pytest.fixture
def make_client(stylizer, library):
    """A test client over a fresh engine (so caches start empty), with these limits and options."""
    from fastapi.testclient import TestClient

    from adain_cli import serve, web

    engines = []

    def make(limits=None, engine_stylizer=None, **options):
        engine = serve.Engine(engine_stylizer or stylizer, limits or serve.Limits())
        engines.append(engine)
        client = TestClient(web.create_app(engine, library, web.Options(**options)), base_url=LOCAL)
        client.engine = engine  # type: ignore[attr-defined]
        return client

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def client(make_client):
    return make_client()
