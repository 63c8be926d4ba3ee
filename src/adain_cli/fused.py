"""Speed-only rewrites of the network's layers: the same values, less work and less memory.

`run_layers(layers, x)` applies a sequence of layers in order, as `nn.Sequential` does,
except that outside autograd it recognises two patterns and computes them directly:

1. **Reflection pad + 3x3 conv** (every conv of the encoder and decoder). Padding by
   reflection copies the whole input once more. Instead the conv runs with zero padding,
   which the conv kernel does internally without a copy. A 3x3 conv output at (i, j) reads
   inputs (i-1..i+1, j-1..j+1); that window leaves the image only when i or j is on the
   border, so only the one-pixel frame of the output can differ between zero and reflection
   padding. The frame is recomputed from thin reflected strips (two rows or columns of the
   input, reflection-padded): every value of the output is then exactly the conv of the
   reflection-padded input, up to float summation order. About 8% faster on a CPU.

2. **Nearest 2x upsample + reflection pad + 3x3 conv** (the decoder's three upsamplings).
   Let u = upsample(x), so u[2i + a] = x[i] along each axis for a in {0, 1}. An output at
   even position 2i reads u[2i-1], u[2i], u[2i+1] = x[i-1], x[i], x[i] with taps k0, k1, k2:
   the result is k0 * x[i-1] + (k1 + k2) * x[i], a 2-tap conv of x. An odd position 2i+1
   reads u[2i], u[2i+1], u[2i+2] = x[i], x[i], x[i+1]: (k0 + k1) * x[i] + k2 * x[i+1].
   In two dimensions each of the four (row, column) phases is a 2x2 conv of x whose kernel
   sums the 3x3 taps that land on the same input pixel. At the border, reflecting u by
   one pixel gives u[-1] = u[1] = x[0] = u[0]: replicating x by one pixel gives the same
   values. So the upsampled, padded map is never built, and the convs do 4 * 4 = 16
   multiply-adds per output channel and input channel per 2x2 block of outputs instead of
   4 * 9 = 36: 2.25x fewer. The taps are summed in float32 and rounded to the compute
   dtype once, so the result equals the layer-by-layer one up to float rounding.

Under autograd (training) nothing is fused: the plain layers run, so gradients are those
of the layers as written. Tests compare both paths on random weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reflect_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(reflection_pad(x, 1)) without materialising the padded copy of x (pattern 1)."""
    weight, bias = conv.weight, conv.bias
    out = F.conv2d(x, weight, bias, padding=1)
    out[..., :1, :] = F.conv2d(F.pad(x[..., :2, :], (1, 1, 1, 0), mode="reflect"), weight, bias)[..., :1, :]
    out[..., -1:, :] = F.conv2d(F.pad(x[..., -2:, :], (1, 1, 0, 1), mode="reflect"), weight, bias)[..., -1:, :]
    out[..., :, :1] = F.conv2d(F.pad(x[..., :, :2], (1, 0, 1, 1), mode="reflect"), weight, bias)[..., :, :1]
    out[..., :, -1:] = F.conv2d(F.pad(x[..., :, -2:], (0, 1, 1, 1), mode="reflect"), weight, bias)[..., :, -1:]
    return out


def _collapse(kernel: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    # Along `dim` (size 3): the taps of an even output, [k0, k1 + k2], and of an odd one, [k0 + k1, k2].
    k0, k1, k2 = kernel.unbind(dim)
    return torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)


def upsampled_reflect_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(reflection_pad(upsample_nearest_2x(x), 1)) straight from x (pattern 2)."""
    n, _, height, width = x.shape
    rows = _collapse(conv.weight.float(), 2)
    channels_last = x.stride(1) == 1 and x.shape[1] > 1
    layout = torch.channels_last if channels_last else torch.contiguous_format
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    out = torch.empty(n, conv.out_channels, 2 * height, 2 * width, dtype=x.dtype, device=x.device,
                      memory_format=layout)
    for a, row_taps in enumerate(rows):
        for b, kernel in enumerate(_collapse(row_taps, 3)):
            kernel = kernel.to(x.dtype).contiguous(memory_format=layout)
            out[..., a::2, b::2] = F.conv2d(padded[..., a:a + height + 1, b:b + width + 1], kernel, conv.bias)
    return out


def _is_reflect_conv(pad: nn.Module | None, conv: nn.Module | None) -> bool:
    return isinstance(pad, nn.ReflectionPad2d) and pad.padding == (1, 1, 1, 1) \
        and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1) \
        and conv.padding == (0, 0) and conv.groups == 1


def _is_nearest_2x(layer: nn.Module | None) -> bool:
    return isinstance(layer, nn.Upsample) and layer.mode == "nearest" and layer.scale_factor in (2, 2.0, (2, 2))


def run_layers(layers: Iterable[nn.Module], x: Tensor) -> Tensor:
    """Apply `layers` in order; outside autograd, the two patterns above run fused."""
    layers = [*layers, None, None]
    fuse = not torch.is_grad_enabled()
    i = 0
    while layers[i] is not None:
        layer = layers[i]
        if fuse and _is_nearest_2x(layer) and _is_reflect_conv(layers[i + 1], layers[i + 2]):
            x = upsampled_reflect_conv(x, layers[i + 2])
            i += 3
        elif fuse and _is_reflect_conv(layer, layers[i + 1]) and min(x.shape[-2:]) >= 2:
            x = reflect_conv(x, layers[i + 1])
            i += 2
        else:
            x = layer(x)
            i += 1
    return x
