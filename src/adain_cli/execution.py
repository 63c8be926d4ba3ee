"""How the networks run: device, precision, memory layout, and tiles within a memory budget.

The pipeline (stylizer.py) says *what* to compute; this module decides *how*, behind
one call, `Network.run(x)`:

- the options (device, precision, tile, memory budget, batch size, compile) are resolved
  and checked once, in `Execution.resolve`, and never again;
- a batch runs in one network call when it fits the budget; otherwise each item runs
  alone, in tiles sized by the memory model (memory.py) when even one would not fit;
- after an out-of-memory error the item runs again in tiles half the size, down to
  memory.MIN_TILE; between tiles freed memory goes back to the system (memory.trim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import memory, tiling
from .device import Precision, compute_dtype, pick_device
from .errors import UsageError
from .model import STRIDE, cat
from .tiling import Geometry

# Pairs per network call on CUDA by default: enough to fill a large GPU at 512 px.
CUDA_BATCH_SIZE = 8

# Called with each window (or the whole input) and the batch items it belongs to, before the network.
Prepare = Callable[[Tensor, slice], Tensor]


def memory_layout(device: torch.device, *, training: bool = False) -> torch.memory_format:
    """The layout networks run in on `device`: channels_last, which oneDNN and cuDNN convolutions run
    fastest on; NCHW on MPS, which prefers it. `training`: NCHW except on CUDA, as `adain train` has
    always run (channels_last for training on a CPU is unmeasured, and would change a CPU run's numbers)."""
    if device.type == "mps" or (training and device.type != "cuda"):
        return torch.contiguous_format
    return torch.channels_last


def tune(device: torch.device) -> None:
    """Backend settings for networks called again and again with the same shapes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # batches repeat shapes: pick the fastest kernels once


@dataclass(frozen=True)
class Execution:
    """Resolved execution options. Build it with `resolve`, which checks every value."""

    device: torch.device
    dtype: torch.dtype
    tile: int | None = None  # px; None: chosen from the budget
    max_memory: int | None = None  # bytes; None: memory.default_budget at each pass
    batch_size: int = 1  # contents encoded and pairs decoded per network call
    compile: bool = False
    training: bool = False  # the networks are also being trained (see memory_layout)

    @classmethod
    def resolve(
        cls,
        device: str | torch.device = "auto",
        precision: Precision = "fp32",
        *,
        tile: int | None = None,
        max_memory: str | int | None = None,
        batch_size: int = 0,
        compile: bool = False,
    ) -> Execution:
        """Options as a user gives them; UsageError naming the first that cannot work.

        `tile` None: no fixed tile (the command line's `--tile 0`). `max_memory` bytes or a size such as "1.5G";
        "auto" or None: the default budget. `batch_size` 0: 8 on CUDA, else 1.
        """
        target = pick_device(str(device))
        dtype = compute_dtype(precision, target)
        if tile is not None and (tile < STRIDE or tile % STRIDE):
            raise UsageError(f"--tile must be a positive multiple of {STRIDE}, got {tile}")
        if isinstance(max_memory, str):
            max_memory = None if max_memory == "auto" else memory.parse_size(max_memory)
        if max_memory is not None and max_memory <= 0:
            raise UsageError(f"--max-memory must be positive, got {max_memory}")
        if batch_size < 0:
            raise UsageError(f"--batch-size must be 0 (automatic) or more, got {batch_size}")
        batch = batch_size or (CUDA_BATCH_SIZE if target.type == "cuda" else 1)
        return cls(target, dtype, tile, max_memory, batch, compile)

    @classmethod
    def for_training(cls, device: torch.device) -> Execution:
        """fp32 on the device a decoder is training on, in training's layout: for previews."""
        return cls(device, torch.float32, training=True)

    @property
    def layout(self) -> torch.memory_format:
        return memory_layout(self.device, training=self.training)

    def budget(self) -> int:
        return memory.default_budget(self.device) if self.max_memory is None else self.max_memory


class Network:
    """A network placed on the execution's device, dtype and layout, run within its budget."""

    def __init__(self, module: nn.Module, execution: Execution, geometry: Geometry, *,
                 float_output: bool = False, keeps_features: bool = False) -> None:
        """`float_output`: return float32 whatever the compute dtype (images). `keeps_features`:
        the output is relu4_1 features that stay in memory for later passes (the budget saves room)."""
        self.module = module.to(execution.device, execution.dtype, memory_format=execution.layout).eval()
        self.execution = execution
        self.geometry = geometry
        self.float_output = float_output
        self.keeps_features = keeps_features
        self.call: Callable[[Tensor], Tensor] = torch.compile(self.module) if execution.compile else self.module
        tune(execution.device)

    def run(self, x: Tensor, prepare: Prepare | None = None) -> Tensor:
        """The network's output for a batch x (N, C, H, W), as one call would give it.

        `prepare(window, items)` is applied to each window first (AdaIN, say): anything
        position-wise is tiled for free.
        """
        count = len(x)
        tile = self._tile_for(x, 1)
        if count > 1 and tile is None and self._tile_for(x, count) is None:
            try:
                return self._pass(x, slice(None), None, prepare)
            except Exception as exc:
                if not memory.is_exhausted(exc):
                    raise
                memory.release(self.execution.device)
        return cat([self._fitted(x[i:i + 1], slice(i, i + 1), tile, prepare) for i in range(count)])

    def _pass(self, x: Tensor, items: slice, tile: int | None, prepare: Prepare | None) -> Tensor:
        def window(part: Tensor) -> Tensor:
            if prepare is not None:
                part = prepare(part, items)
            out = self.call(part.to(self.execution.dtype, memory_format=self.execution.layout))
            return out.float() if self.float_output else out

        if tile is None:
            return window(x)

        def trimmed(part: Tensor) -> Tensor:
            out = window(part)
            memory.trim(self.execution.device)  # the previous window's buffers are free now
            return out

        return tiling.run_tiled(trimmed, x, tile, self.geometry)

    def _fitted(self, x: Tensor, items: slice, tile: int | None, prepare: Prepare | None) -> Tensor:
        """One item; after an out-of-memory error, again in tiles half the size, down to MIN_TILE."""
        while True:
            try:
                return self._pass(x, items, tile, prepare)
            except Exception as exc:
                if not memory.is_exhausted(exc) or (tile is not None and tile <= memory.MIN_TILE):
                    raise
                memory.release(self.execution.device)
                side = max(x.shape[-2:]) * self.geometry.unit if tile is None else tile
                tile = max(side // 2 // STRIDE * STRIDE, memory.MIN_TILE)

    def _tile_for(self, x: Tensor, count: int) -> int | None:
        """The tile a pass over `count` items of x needs to stay within the budget, leaving room
        for the buffers still to come (None: no tiling)."""
        if self.execution.tile is not None:
            return self.execution.tile
        unit, element_size = self.geometry.unit, self.execution.dtype.itemsize
        height, width = x.shape[-2] * unit, x.shape[-1] * unit
        reserve = memory.image_bytes(count * height * width, element_size if self.keeps_features else 0)
        room = self.execution.budget() - memory.in_use(self.execution.device) - reserve
        return memory.tile_for(height, width, count, element_size, room, self.geometry.halo * unit)
