"""Where weight files live and how they are loaded: safely, and only in the public layout."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import platformdirs
import torch
from torch import nn

from .errors import WeightsError
from .model import Decoder, Encoder, build_vgg

VGG_FILE = "vgg_normalised.pth"
DECODER_FILE = "decoder.pth"
HOME_ENV = "ADAIN_HOME"

_MAX_NAMES_SHOWN = 3


@dataclass(frozen=True)
class WeightSpec:
    """One file of the manifest (weights/manifest.json, shipped as adain_cli/manifest.json)."""

    name: str
    role: str  # "encoder" or "decoder"
    url: str
    size: int | None  # None: not known yet (never guessed)
    sha256: str | None  # None: not known yet (never guessed)
    source: str
    licence: str

    def layout(self) -> dict[str, torch.Size]:
        with torch.device("meta"):  # keys and shapes only: no memory, no random initialisation
            return layout(build_vgg() if self.role == "encoder" else Decoder())


@cache
def manifest() -> tuple[WeightSpec, ...]:
    """The weight files adain-cli uses, from the manifest inside the package."""
    text = resources.files("adain_cli").joinpath("manifest.json").read_text(encoding="utf-8")
    return tuple(WeightSpec(**entry) for entry in json.loads(text)["files"])


def home() -> Path:
    """adain-cli's data directory: $ADAIN_HOME, else the platform's user data directory."""
    override = os.environ.get(HOME_ENV)
    return Path(override).expanduser() if override else Path(platformdirs.user_data_dir("adain-cli"))


def weights_dir() -> Path:
    """Where `vgg_normalised.pth` and `decoder.pth` are looked up when no path is given."""
    return home() / "weights"


def resolve_paths(vgg: Path | None = None, decoder: Path | None = None) -> tuple[Path, Path]:
    """The weight files to load: given paths as they are, the rest from the weights directory."""
    vgg_path = vgg if vgg is not None else weights_dir() / VGG_FILE
    decoder_path = decoder if decoder is not None else weights_dir() / DECODER_FILE
    missing = [p for p, given in ((vgg_path, vgg), (decoder_path, decoder)) if not given and not p.is_file()]
    if missing:
        names = " and ".join(p.name for p in missing)
        raise WeightsError(f"{names} not found in {weights_dir()}: run `adain download-weights` "
                           "(or pass --vgg and --decoder)")
    return vgg_path, decoder_path


def layout(module: nn.Module) -> dict[str, torch.Size]:
    """State-dict keys and shapes of a module, the contract a weights file must meet."""
    return {key: tensor.shape for key, tensor in module.state_dict().items()}


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def read_state_dict(
    path: Path, expected: dict[str, torch.Size], exact_dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Load a state dict without unpickling code, and check it has exactly the expected layout.

    Values must be finite floats; `exact_dtype` also pins their type (installs want float32).
    """
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a loadable weights file ({first_line})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_describe(unexpected)}")
        raise WeightsError(f"{path}: not the expected layout: {'; '.join(parts)}")
    wrong = [
        f"{k} is {tuple(state[k].shape)}, expected {tuple(shape)}"
        for k, shape in expected.items()
        if state[k].shape != shape
    ]
    if wrong:
        raise WeightsError(f"{path}: wrong shapes: {_describe(wrong)}")
    mistyped = [f"{k} is {v.dtype}" for k, v in state.items()
                if not v.is_floating_point() or (exact_dtype is not None and v.dtype != exact_dtype)]
    if mistyped:
        wanted = exact_dtype or "floating point"
        raise WeightsError(f"{path}: wrong value types ({wanted} expected): {_describe(mistyped)}")
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{path}: non-finite values in {_describe(bad)}")
    return {k: v.float() for k, v in state.items()}


def _loaded(module: nn.Module, path: Path) -> nn.Module:
    # Built on the meta device, then given the file's tensors: random initialisation of
    # 23 M parameters that would be overwritten at once costs 0.2 s of every start.
    module.load_state_dict(read_state_dict(path, layout(module)), assign=True)
    return module


def load_encoder(path: Path) -> Encoder:
    """The encoder from a full `vgg_normalised.pth` (through relu5_4), cut at relu4_1."""
    with torch.device("meta"):
        vgg = build_vgg()
    return Encoder(_loaded(vgg, path))


def load_decoder(path: Path) -> Decoder:
    """A decoder from a file in the public `decoder.pth` layout."""
    with torch.device("meta"):
        decoder = Decoder()
    return _loaded(decoder, path).eval()


def encoder_identity(encoder: Encoder) -> str:
    """sha256 over the encoder's weights (as float32): what a trained decoder and a style's
    statistics are tied to."""
    digest = hashlib.sha256()
    for key, tensor in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
