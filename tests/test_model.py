"""The network: public weight layout, AdaIN as the paper defines it, output geometry."""

from __future__ import annotations

import pytest
import torch
from conftest import PUBLIC_DECODER_CONVS, PUBLIC_VGG_CONVS, public_layout, synthetic_image

from adain_cli import Stylizer, adain, feature_stats, images
from adain_cli.model import VGG_LAYER_ENDS, Decoder, Encoder, blend, build_vgg
from adain_cli.weights import layout


def test_vgg_has_exactly_the_public_vgg_normalised_keys_and_shapes():
    assert {k: tuple(v) for k, v in layout(build_vgg()).items()} == public_layout(PUBLIC_VGG_CONVS)


def test_decoder_has_exactly_the_public_decoder_keys_and_shapes():
    assert {k: tuple(v) for k, v in layout(Decoder()).items()} == public_layout(PUBLIC_DECODER_CONVS)


def test_encoder_stops_at_relu4_1_of_the_vgg():
    vgg = build_vgg()
    assert VGG_LAYER_ENDS["relu4_1"] == 31
    assert isinstance(vgg[30], torch.nn.ReLU) and vgg[29].out_channels == 512
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(Encoder(vgg)(x), vgg[:31](x))


def test_encoder_features_are_named_by_layer_with_the_right_channels():
    feats = Encoder()(torch.rand(1, 3, 32, 32))
    assert {k: v.shape[1] for k, v in Encoder().features(torch.rand(1, 3, 32, 32)).items()} == {
        "relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512}
    assert feats.shape == (1, 512, 4, 4)


def test_encoder_is_frozen_even_when_asked_to_train():
    encoder = Encoder().train()
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_decoder_upsamples_by_8_with_no_final_activation():
    decoder = Decoder()
    assert isinstance(decoder[-1], torch.nn.Conv2d)
    assert decoder(torch.rand(1, 512, 3, 5)).shape == (1, 3, 24, 40)


def test_feature_stats_are_per_sample_per_channel_with_unbiased_variance_plus_eps():
    x = torch.randn(2, 4, 5, 6)
    stats = feature_stats(x)
    flat = x.reshape(2, 4, 30)
    expected_std = torch.sqrt(flat.var(dim=2, unbiased=True) + 1e-5)
    torch.testing.assert_close(stats.mean.view(2, 4), flat.mean(dim=2))
    torch.testing.assert_close(stats.std.view(2, 4), expected_std)


def test_adain_matches_the_papers_formula():
    x, y = torch.randn(2, 8, 6, 7), torch.randn(2, 8, 9, 4) * 3 + 1
    mu = lambda t: t.mean(dim=(2, 3), keepdim=True)  # noqa: E731
    sigma = lambda t: (t.var(dim=(2, 3), keepdim=True) + 1e-5).sqrt()  # noqa: E731
    expected = sigma(y) * (x - mu(x)) / sigma(x) + mu(y)
    torch.testing.assert_close(adain(x, feature_stats(y)), expected, rtol=1e-5, atol=1e-5)


def test_adain_output_takes_the_style_statistics():
    x, y = torch.randn(1, 8, 10, 10), torch.randn(1, 8, 7, 7) * 2 - 3
    out = feature_stats(adain(x, feature_stats(y)))
    torch.testing.assert_close(out.mean, feature_stats(y).mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std, feature_stats(y).std, atol=1e-4, rtol=1e-4)


def test_adain_can_normalise_with_given_content_statistics():
    whole = torch.randn(1, 8, 10, 10)
    part = whole[..., :5]
    style = feature_stats(torch.randn(1, 8, 4, 4))
    torch.testing.assert_close(adain(part, style, feature_stats(whole)), adain(whole, style)[..., :5])


def test_blend_is_the_alpha_tradeoff():
    t, f = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(blend(t, f, 0.25), 0.25 * t + 0.75 * f)
    assert blend(t, f, 1.0) is t


def test_alpha_zero_decodes_the_content_features(stylizer: Stylizer):
    content = images.to_tensor(synthetic_image(48, 40, seed=3))
    style = images.to_tensor(synthetic_image(40, 40, seed=4))
    out = stylizer.stylize(content, style, alpha=0.0)
    with torch.inference_mode():
        expected = stylizer.decoder(stylizer.encoder(content))
    torch.testing.assert_close(out, expected[..., :40, :48])


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (33, 65), (101, 77), (64, 40)])
def test_output_has_exactly_the_content_size(stylizer: Stylizer, size: tuple[int, int]):
    content = synthetic_image(*size, seed=5)
    out = stylizer.stylize(content, synthetic_image(30, 30, seed=6))
    assert out.size == size


def test_odd_sizes_are_reflected_up_to_the_stride_and_cropped_back(stylizer: Stylizer):
    seen = []
    handle = stylizer.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    try:
        out = stylizer.stylize(images.to_tensor(synthetic_image(45, 27, seed=1)), synthetic_image(20, 20))
    finally:
        handle.remove()
    content = images.to_tensor(synthetic_image(45, 27, seed=1))
    padded = seen[0]  # the content as the encoder saw it; then the style, as it is
    assert padded.shape[-2:] == (32, 48) and tuple(seen[1].shape[-2:]) == (20, 20)
    torch.testing.assert_close(padded[..., 27:, :45], content.flip(-2)[..., 1:6, :])  # rows mirrored
    assert out.shape[-2:] == (27, 45)


def test_stylize_accepts_precomputed_style_statistics(stylizer: Stylizer):
    content = images.to_tensor(synthetic_image(32, 32, seed=1))
    style = images.to_tensor(synthetic_image(40, 24, seed=2))
    stats = stylizer.style_stats(style)
    torch.testing.assert_close(stylizer.stylize(content, stats), stylizer.stylize(content, style))


def test_stylize_rejects_alpha_outside_zero_to_one(stylizer: Stylizer):
    from adain_cli import UsageError

    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(UsageError, match="alpha"):
            stylizer.stylize(synthetic_image(16, 16), synthetic_image(16, 16), alpha=alpha)
