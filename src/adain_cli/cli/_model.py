"""The model a command runs, with missing default weights fetched on first use."""

from __future__ import annotations

from pathlib import Path

from .. import install, weights
from ..execution import Execution
from ..stylizer import Stylizer
from ._progress import download_progress


def load_stylizer(vgg: Path | None, decoder: Path | None, execution: Execution, *, offline: bool,
                  quiet: bool) -> Stylizer:
    """The model for a command: the files given, or the weights directory's, fetched if missing."""
    needed = [name for name, given in ((weights.VGG_FILE, vgg), (weights.DECODER_FILE, decoder)) if given is None]
    with download_progress(quiet) as progress:
        install.ensure(needed, offline=offline or install.offline_requested(), progress=progress)
    return Stylizer.from_files(vgg, decoder, execution=execution)
