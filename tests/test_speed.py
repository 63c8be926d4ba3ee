"""The fast paths give the plain network's result: fused layers, batches, precision, memory budgets."""

from __future__ import annotations

import math
import time

import pytest
import torch
from conftest import synthetic_image
from typer.testing import CliRunner

from adain_cli import Stylizer, UsageError, batch, fused, images, jobs, memory, tiling
from adain_cli.cli import app
from adain_cli.device import cpu_has_fast_bf16
from adain_cli.inputs import expand
from adain_cli.weights import load_decoder, load_encoder


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def layer_by_layer(layers, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def fresh(weights, **options) -> Stylizer:
    # Stylizers move their modules (dtype, layout): never share the session fixture's.
    return Stylizer(load_encoder(weights[0]), load_decoder(weights[1]), "cpu", **options)


@pytest.mark.parametrize("size", [(16, 16), (40, 72), (101, 67)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_encoder_and_decoder_equal_the_layers_run_one_by_one(stylizer, size, layout):
    image = torch.rand(1, 3, *size).contiguous(memory_format=layout)
    encoder_layers = [layer for part in stylizer.encoder.slices for layer in part]
    with torch.no_grad():
        expected = layer_by_layer(encoder_layers, image.contiguous())
        features = stylizer.encoder(image)
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)
        decoded = stylizer.decoder(features.contiguous(memory_format=layout))
        torch.testing.assert_close(decoded, layer_by_layer(stylizer.decoder, expected), atol=1e-5, rtol=1e-4)


def test_the_fused_path_is_left_alone_under_autograd(stylizer, monkeypatch):
    fused_calls = []
    for name in ("reflect_conv", "upsampled_reflect_conv"):
        real = getattr(fused, name)
        monkeypatch.setattr(fused, name, lambda x, conv, real=real: fused_calls.append(conv) or real(x, conv))
    features = torch.rand(1, 512, 4, 5, requires_grad=True)
    with torch.enable_grad():
        out = stylizer.decoder(features)
        out.sum().backward()
    assert fused_calls == []  # every layer ran as written, so autograd saw the plain layers
    plain = features.detach().clone().requires_grad_()
    with torch.enable_grad():
        layer_by_layer(stylizer.decoder, plain).sum().backward()
    torch.testing.assert_close(features.grad, plain.grad)
    with torch.no_grad():
        stylizer.decoder(features)
    assert len(fused_calls) == 9  # without autograd: all nine convs fused, three with their upsampling


def test_batched_rendering_equals_one_pair_at_a_time(stylizer):
    contents = torch.stack([images.to_tensor(synthetic_image(48, 40, seed=s))[0] for s in range(3)])
    styles = [stylizer.style_stats(images.to_tensor(synthetic_image(32, 32, seed=10 + s))) for s in range(3)]
    encoded = stylizer.encode_contents(contents)
    together = stylizer.render_batch(encoded, styles, alpha=0.7)
    for i in range(3):
        alone = stylizer.render(stylizer.encode_content(contents[i:i + 1]), styles[i], alpha=0.7)
        torch.testing.assert_close(together[i:i + 1], alone, atol=1e-5, rtol=1e-4)


def test_a_batch_of_same_size_contents_is_encoded_in_one_call(stylizer, images_dir, tmp_path, monkeypatch):
    calls = []
    handle = stylizer.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    settings = jobs.Settings(content_size=32, style_size=32, crop=True)
    # Decoding slower than the model: a run's batches are still full (the runner's `fill`).
    load = jobs.Settings.load_content
    monkeypatch.setattr(jobs.Settings, "load_content", lambda self, path: (time.sleep(0.2), load(self, path))[1])
    try:
        planned = batch.plan(expand(images_dir / "content"), expand(images_dir / "style"), tmp_path / "b3")
        results = batch.run(Stylizer(stylizer.encoder, stylizer.decoder, "cpu", batch_size=3), planned, settings)
    finally:
        handle.remove()
    assert [r.status for r in results] == ["written"] * 6
    assert calls.count(3) == 1  # the three contents together; the two styles alone
    single = batch.run(stylizer, batch.plan(expand(images_dir / "content"), expand(images_dir / "style"),
                                            tmp_path / "b1"), settings)
    for one, many in zip(single, results, strict=True):
        a, b = images.load_tensor(one.output, 0, False), images.load_tensor(many.output, 0, False)
        assert (a - b).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no fast bf16")
def test_bf16_stays_close_to_fp32(weights):
    content = images.to_tensor(synthetic_image(96, 80, seed=1))
    style = images.to_tensor(synthetic_image(64, 64, seed=2))
    exact = fresh(weights).stylize(content, style)
    fast = fresh(weights, precision="bf16")
    out = fast.stylize(content, style)
    assert out.dtype == torch.float32 and fast.encode_content(content).features.dtype == torch.bfloat16
    assert psnr(out, exact) > 30


def test_fp16_on_a_cpu_is_refused_with_the_alternative(weights):
    with pytest.raises(UsageError, match="fp16 is for GPUs"):
        fresh(weights, precision="fp16")
    with pytest.raises(UsageError, match="unknown precision"):
        fresh(weights, precision="fp8")


@pytest.mark.parametrize("text,size", [("1.5G", 1_500_000_000), ("800M", 800_000_000), ("2GiB", 2 * 2**30),
                                       ("512mb", 512_000_000), ("4096", 4096)])
def test_memory_sizes_parse(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "1.5X", ""])
def test_bad_memory_sizes_are_usage_errors(text):
    with pytest.raises(UsageError):
        memory.parse_size(text)


def test_tiles_are_chosen_only_when_the_pass_would_not_fit():
    fits = memory.pass_bytes(512 * 512, 4)
    assert memory.tile_for(512, 512, 1, 4, fits, halo=40) is None
    tile = memory.tile_for(4000, 3000, 1, 4, fits, halo=40)
    assert tile is not None and tile % 64 == 0 and memory.pass_bytes((tile + 80) ** 2, 4) <= fits
    assert memory.tile_for(4000, 3000, 1, 4, 0, halo=40) == memory.MIN_TILE


def test_a_small_memory_budget_tiles_automatically_with_the_same_result(weights, stylizer, monkeypatch):
    content = images.to_tensor(synthetic_image(203, 157, seed=3))
    style = images.to_tensor(synthetic_image(48, 48, seed=4))
    untiled = stylizer.stylize(content, style)
    tiled_calls = []
    real = tiling.run_tiled
    monkeypatch.setattr(tiling, "run_tiled", lambda *a: tiled_calls.append((a[3], a[2])) or real(*a))
    out = fresh(weights, max_memory=1).stylize(content, style)  # no room at all: the smallest tiles
    assert {geometry for geometry, _ in tiled_calls} == {tiling.ENCODER, tiling.DECODER}
    assert {tile for _, tile in tiled_calls} == {memory.MIN_TILE}
    assert psnr(out, untiled) > 40


def test_out_of_memory_is_retried_in_smaller_tiles(weights, stylizer):
    content = images.to_tensor(synthetic_image(200, 160, seed=5))
    style = images.to_tensor(synthetic_image(48, 48, seed=6))
    expected = stylizer.stylize(content, style)
    flaky = fresh(weights)
    real_decoder = flaky._decoder.call
    seen = []

    def decoder_with_little_memory(features: torch.Tensor) -> torch.Tensor:
        seen.append(features.shape[-1])
        if features.shape[-2] * features.shape[-1] > 20 * 20:  # more feature cells than 160x160 px fails
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real_decoder(features)

    flaky._decoder.call = decoder_with_little_memory
    out = flaky.stylize(content, style)
    assert max(seen) > 20 and psnr(out, expected) > 40


def test_running_out_of_memory_while_encoding_is_retried_in_smaller_tiles(weights, stylizer):
    from test_batch import CPU_OUT_OF_MEMORY

    content = images.to_tensor(synthetic_image(200, 160, seed=7))
    style = images.to_tensor(synthetic_image(48, 48, seed=8))
    expected = stylizer.stylize(content, style)
    flaky = fresh(weights)
    real_encoder, seen = flaky._encoder.call, []

    def encoder_with_little_memory(image: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(image.shape[-2:]))
        if image.shape[-2] * image.shape[-1] > 150 * 150:  # a CPU allocation failure, not torch's OutOfMemoryError
            raise CPU_OUT_OF_MEMORY
        return real_encoder(image)

    flaky._encoder.call = encoder_with_little_memory
    out = flaky.stylize(content, style)
    assert seen[0] == (160, 200) and len(seen) > 3  # the whole content failed, then its tiles ran
    assert psnr(out, expected) > 40


def test_bad_speed_options_exit_2_and_write_nothing(weights_home, tmp_path):
    synthetic_image(40, 40, seed=1).save(tmp_path / "c.png")
    synthetic_image(40, 40, seed=2).save(tmp_path / "s.png")
    base = ["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"),
            "--device", "cpu"]
    for extra, message in ((["--precision", "fp16"], "fp16 is for GPUs"), (["--max-memory", "lots"], "memory size"),
                           (["--precision", "int4"], "unknown precision")):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "o.png").exists()


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no fast bf16")
def test_the_speed_options_from_the_command_line_reach_the_networks(weights_home, tmp_path, monkeypatch):
    for seed in range(2):
        synthetic_image(48, 40, seed=seed).save(tmp_path / f"c{seed}.png")
    synthetic_image(40, 40, seed=9).save(tmp_path / "s.png")
    decoded = []  # per decoder call: what ran it, and the batch it was given
    real = Stylizer.render_batch

    def recording(self, contents, styles, *args, **kwargs):
        execution = self.execution
        decoded.append((execution.dtype, execution.batch_size, execution.budget(), len(contents),
                        contents[0].features.dtype))
        return real(self, contents, styles, *args, **kwargs)

    monkeypatch.setattr(Stylizer, "render_batch", recording)
    result = CliRunner().invoke(app, ["stylize", str(tmp_path / "c*.png"), str(tmp_path / "s.png"), "-o",
                                      str(tmp_path / "out"), "--precision", "bf16", "--batch-size", "2",
                                      "--max-memory", "2G", "--content-size", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0_stylized_s.png", "c1_stylized_s.png"]
    # Both pairs in one decoder call, in bf16 (the features too), within a 2 GB budget.
    assert decoded == [(torch.bfloat16, 2, 2_000_000_000, 2, torch.bfloat16)]


def test_compiled_networks_give_the_eager_result(weights, stylizer):
    # Content and style of one size, a multiple of 8: one graph per network, the graphs the README's
    # `--compile` example makes, so whichever runs second finds them in torch's compile cache.
    content = images.to_tensor(synthetic_image(48, 40, seed=7))
    style = images.to_tensor(synthetic_image(48, 40, seed=8))
    out = fresh(weights, compile=True).stylize(content, style)
    assert psnr(out, stylizer.stylize(content, style)) > 40
