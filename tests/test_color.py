"""Colour preservation: CORAL as the reference port computes it, and luminance-only transfer."""

from __future__ import annotations

import torch

from adain_cli.color import coral, finish, keep_content_colors, prepare_style


def reference_coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pytorch-AdaIN's function.coral, restated with SVD square roots on (3, H, W) tensors."""
    def flat_stats(x):
        f = x.reshape(3, -1).double()
        return f, f.mean(1, keepdim=True), f.std(1, keepdim=True)

    def mat_sqrt(m):
        u, d, v = torch.svd(m)
        return u @ torch.diag(d.sqrt()) @ v.T

    sf, sm, ss = flat_stats(source)
    tf, tm, ts = flat_stats(target)
    sn, tn = (sf - sm) / ss, (tf - tm) / ts
    s_cov = sn @ sn.T + torch.eye(3, dtype=torch.float64)
    t_cov = tn @ tn.T + torch.eye(3, dtype=torch.float64)
    moved = mat_sqrt(t_cov) @ torch.inverse(mat_sqrt(s_cov)) @ sn
    return (moved * ts + tm).float().reshape(source.shape)


def test_coral_matches_the_reference_formula():
    gen = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 20, 30, generator=gen) ** 2
    content = torch.rand(1, 3, 25, 17, generator=gen) * 0.5 + 0.2
    torch.testing.assert_close(coral(style, content), reference_coral(style, content), rtol=1e-4, atol=1e-5)


def test_coral_moves_the_style_colour_means_to_the_content():
    gen = torch.Generator().manual_seed(1)
    style = torch.rand(1, 3, 16, 16, generator=gen) * torch.tensor([1.0, 0.2, 0.1]).view(1, 3, 1, 1)
    content = torch.rand(1, 3, 16, 16, generator=gen) * torch.tensor([0.1, 0.3, 1.0]).view(1, 3, 1, 1)
    moved = coral(style, content)
    torch.testing.assert_close(moved.mean(dim=(0, 2, 3)), content.mean(dim=(0, 2, 3)), atol=1e-5, rtol=0)


def to_yiq(rgb):
    m = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263],
                      [0.211456, -0.522591, 0.311135]])
    return torch.einsum("ij,njhw->nihw", m, rgb)


def test_luminance_only_keeps_the_content_chroma_and_the_stylized_luminance():
    gen = torch.Generator().manual_seed(2)
    stylized = torch.rand(1, 3, 8, 8, generator=gen) * 0.6 + 0.2
    content = torch.rand(1, 3, 8, 8, generator=gen) * 0.2 + 0.4
    out = keep_content_colors(stylized, content)
    torch.testing.assert_close(to_yiq(out)[:, 0], to_yiq(stylized)[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(to_yiq(out)[:, 1:], to_yiq(content)[:, 1:], atol=1e-5, rtol=0)


def test_modes_touch_only_their_own_step():
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert prepare_style(a, b, "style") is a and prepare_style(a, b, "luminance") is a
    assert finish(a, b, "style") is a and finish(a, b, "coral") is a
    assert not torch.equal(prepare_style(a, b, "coral"), a)
    assert not torch.equal(finish(a, b, "luminance"), a)
