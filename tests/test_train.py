"""`adain train` on tiny synthetic folders with a random VGG, on the CPU, in seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from PIL import Image
from test_inputs import VISIBLE_IMAGES, hidden_and_tif_tree
from typer.testing import CliRunner

from adain_cli import Stylizer, UsageError, WeightsError, data, errors, images, training
from adain_cli.cli import app
from adain_cli.model import Decoder, adain, feature_stats
from adain_cli.weights import load_encoder


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "coco", tmp_path / "wikiart"
    (content / "sub").mkdir(parents=True)
    style.mkdir()
    for i in range(4):
        synthetic_image(88, 72, seed=i).save((content / "sub" if i % 2 else content) / f"c{i}.jpg")
        synthetic_image(72, 96, seed=10 + i).save(style / f"s{i}.png")
    return content, style


def config(folders, weights, out: Path, **overrides) -> training.TrainConfig:
    values = dict(content_dir=str(folders[0]), style_dir=str(folders[1]), out=str(out), vgg=str(weights[0]),
                  iterations=4, batch_size=2, image_size=40, crop_size=32, workers=0, save_every=2,
                  preview_every=2, device="cpu")
    return training.TrainConfig(**{**values, **overrides})


def decoder_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "decoder.pth", weights_only=True)


def test_the_loss_falls_when_overfitting_a_fixed_batch(weights):
    torch.manual_seed(0)
    encoder, decoder = load_encoder(weights[0]), Decoder()
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        loss_c, loss_s = training.losses(encoder, decoder, content, style)
        return loss_c + 10 * loss_s

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.85 * first


def test_style_loss_is_zero_for_identical_statistics():
    features = {"relu1_1": torch.rand(2, 4, 8, 8), "relu4_1": torch.rand(2, 4, 2, 2)}
    assert training.style_loss(features, features).item() == 0


def test_a_run_writes_checkpoint_decoder_metrics_and_previews(folders, weights, tmp_path):
    out = tmp_path / "run"
    assert training.train(config(folders, weights, out)) == 4
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2, 3, 4]
    assert {"loss_content", "loss_style", "lr", "seconds", "skipped"} <= set(lines[0])
    assert lines[1]["lr"] == pytest.approx(1e-4 / (1 + 5e-5 * 1))
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["iter_0000002.png", "iter_0000004.png"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 4 and state["config"]["batch_size"] == 2 and state["world"] == 1
    assert set(state["decoder"]) == set(Decoder().state_dict())  # clean keys
    # What resuming uses, and nothing else (no random-number state: nothing draws from the global generator).
    assert set(state) == {"decoder", "optimizer", "scaler", "iteration", "config", "world", "encoder", "skipped"}


def test_the_saved_decoder_loads_into_the_stylize_path(folders, weights, tmp_path):
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=2))
    content, style = synthetic_image(40, 24), synthetic_image(32, 32)
    result = Stylizer.from_files(weights[0], out / "decoder.pth", device="cpu").stylize(content, style)
    trained, untrained = Decoder(), Decoder()
    trained.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["decoder"])
    expected = Stylizer(load_encoder(weights[0]), trained, device="cpu").stylize(content, style)
    assert result.size == (40, 24) and result.tobytes() == expected.tobytes()  # the decoder training ended with
    assert result.tobytes() != Stylizer(load_encoder(weights[0]), untrained, device="cpu").stylize(
        content, style).tobytes()


def test_previews_have_the_pixels_of_encode_adain_decode_on_the_training_networks(folders, weights, tmp_path):
    out = tmp_path / "run"
    run_config = config(folders, weights, out, iterations=2, preview_every=2, save_every=2)
    training.train(run_config)
    decoder, encoder = Decoder(), load_encoder(weights[0])
    decoder.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["decoder"])  # as at the preview
    contents, styles = training._fixed_pairs(data.find_images(folders[0]), data.find_images(folders[1]),
                                             run_config, torch.device("cpu"))
    with torch.no_grad():  # the formula previews were made with before they went through the Stylizer
        outputs = decoder(adain(encoder(contents), feature_stats(encoder(styles))))
    tiles = [t.unsqueeze(0) for triple in zip(contents, styles, outputs, strict=True) for t in triple]
    with Image.open(out / "previews" / "iter_0000002.png") as preview:
        assert preview.tobytes() == images.contact_sheet(tiles, columns=3).tobytes()


def test_training_finds_tif_images_and_skips_hidden_folders(tmp_path):
    root = hidden_and_tif_tree(tmp_path / "images")
    assert data.find_images(root) == [root / name for name in VISIBLE_IMAGES]


def test_training_images_are_in_path_order_as_before(tmp_path):
    for name in ("a b/x.png", "a/x.png", "a-b/x.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        synthetic_image(16, 16).save(tmp_path / name)
    # Path order (part by part), which picks the samples: not the string order of the tree walk.
    assert [p.relative_to(tmp_path).as_posix() for p in data.find_images(tmp_path)] == [
        "a/x.png", "a b/x.png", "a-b/x.png"]


def test_five_plus_resume_plus_five_equals_ten_straight(folders, weights, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    training.train(config(folders, weights, straight, iterations=10, save_every=100))
    training.train(config(folders, weights, resumed, iterations=5, save_every=100))
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["iteration"] == 5
    training.train(config(folders, weights, resumed, iterations=10, save_every=100), resume="latest")
    a, b = decoder_state(straight), decoder_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(1, 11))


def test_resuming_with_another_configuration_is_refused(folders, weights, tmp_path):
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=2))
    with pytest.raises(WeightsError, match=r"another configuration: batch_size=2 \(now 4\)"):
        training.train(config(folders, weights, out, iterations=4, batch_size=4), resume="latest")


def test_resuming_with_another_number_of_processes_is_refused(folders, weights, tmp_path):
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=2))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["world"] = 2  # as torchrun --nproc_per_node 2 saves it
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(WeightsError, match=r"another configuration: processes=2 \(now 1"):
        training.train(config(folders, weights, out, iterations=4), resume="latest")


def test_resuming_from_an_older_checkpoint_drops_the_metrics_of_later_iterations(folders, weights, tmp_path):
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=2, save_every=100))
    shutil.copy(out / "checkpoint.pt", tmp_path / "at-2.pt")
    training.train(config(folders, weights, out, iterations=4, save_every=100), resume="latest")
    training.train(config(folders, weights, out, iterations=3, save_every=100), resume=str(tmp_path / "at-2.pt"))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3]


def test_tensorboard_events_are_closed_when_a_run_ends(folders, weights, tmp_path, monkeypatch):
    events: list[str] = []

    class SummaryWriter:  # stands in for tensorboard's, which is optional and not installed here
        def __init__(self, logdir: str) -> None:
            events.append("open")

        def add_scalar(self, name: str, value: float, step: int) -> None:
            events.append("scalar")

        def close(self) -> None:
            events.append("close")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    training.train(config(folders, weights, tmp_path / "run", iterations=2))
    assert events[0] == "open" and events[-1] == "close" and events.count("scalar") == 8


def test_resuming_with_another_encoder_is_refused(folders, weights, tmp_path):
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=2))
    other = tmp_path / "other_vgg.pth"
    state = torch.load(weights[0], weights_only=True)
    state["0.bias"] = state["0.bias"] + 1
    torch.save(state, other)
    with pytest.raises(WeightsError, match="trained against another encoder"):
        training.train(config(folders, weights, out, iterations=4, vgg=str(other)), resume=str(out))


def test_a_corrupt_file_is_skipped_and_counted(folders, weights, tmp_path):
    (folders[0] / "broken.jpg").write_text("not a jpeg")
    (folders[1] / "tiny.png").parent.mkdir(exist_ok=True)
    synthetic_image(8, 8).save(folders[1] / "tiny.png")
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=6))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {Path(p).name for p in state["skipped"]} == {"broken.jpg", "tiny.png"}
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 2


def test_a_folder_without_usable_images_fails_before_training(folders, weights, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="no images found"):
        training.train(config((empty, folders[1]), weights, tmp_path / "run"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_text("not a jpeg")
    with pytest.raises(UsageError, match="none of its 1 image files could be used"):
        training.train(config((folders[0], broken), weights, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_non_finite_loss_stops_keeping_the_last_good_checkpoint(folders, weights, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_losses, calls = training.losses, []

    def failing(*args):
        calls.append(1)
        loss_c, loss_s = real_losses(*args)
        return (loss_c * float("nan"), loss_s) if len(calls) == 3 else (loss_c, loss_s)

    monkeypatch.setattr(training, "losses", failing)
    assert training.TrainingError.exit_code == errors.EXIT_TRAINING == 6
    with pytest.raises(training.TrainingError, match="loss became nan at iteration 3"):
        training.train(config(folders, weights, out, iterations=6, save_every=2))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 2 and all(torch.isfinite(v).all() for v in state["decoder"].values())


def test_a_stop_request_saves_a_checkpoint(folders, weights, tmp_path):
    stop = threading.Event()
    out = tmp_path / "run"

    def stop_after_two(step: training.Step) -> None:
        if step.iteration == 2:
            stop.set()

    assert training.train(config(folders, weights, out, iterations=50, save_every=100), stop=stop,
                          on_step=stop_after_two) == 3
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 3


def test_sample_streams_are_reproducible_and_sharded():
    numbers = data.SampleNumbers(start_iteration=3, batch_size=2, rank=1, world=2)
    stream = iter(numbers)
    assert [next(stream) for _ in range(4)] == [14, 15, 18, 19]


def test_bad_configurations_are_usage_errors(folders, weights, tmp_path):
    with pytest.raises(UsageError, match="crop-size 128 is larger than image-size 40"):
        config(folders, weights, tmp_path, crop_size=128)
    with pytest.raises(UsageError, match="multiple of 8"):
        config(folders, weights, tmp_path, crop_size=20)


# --- the command, in real processes -----------------------------------------------------------

def train_command(folders, weights, out: Path, *extra: str) -> list[str]:
    return ["--coco", str(folders[0]), "--wikiart", str(folders[1]), "--out", str(out), "--vgg", str(weights[0]),
            "--batch-size", "2", "--image-size", "40", "--crop-size", "32", "--workers", "0", "--device", "cpu",
            *extra]


def test_the_command_trains_and_reports(folders, weights, tmp_path):
    result = CliRunner().invoke(app, ["train", *train_command(folders, weights, tmp_path / "run",
                                                                "--iterations", "2", "--precision", "bf16")])
    assert result.exit_code == 0, result.stderr
    assert "trained 2 iterations" in result.stdout
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["precision"] == "bf16"


def test_the_command_leaves_the_signal_handlers_as_it_found_them(folders, weights, tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["train", *train_command(folders, weights, tmp_path / "run", "--iterations", "1")])
    assert result.exit_code == 0, result.stderr
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_ctrl_c_leaves_a_loadable_checkpoint(folders, weights, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "ADAIN_OFFLINE"}
    process = subprocess.Popen([sys.executable, "-m", "adain_cli", "train",
                                *train_command(folders, weights, out, "--iterations", "100000")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "checkpoint saved" in stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["iteration"] >= 1
    Stylizer.from_files(weights[0], out / "decoder.pth", device="cpu")


def test_two_processes_with_gloo_train_and_only_rank_0_writes(folders, weights, tmp_path):
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k != "ADAIN_OFFLINE"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "adain_cli", "train", *train_command(folders, weights, out, "--iterations", "3")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]  # one writer, not two
    assert result.stdout.count("trained 3 iterations") == 1
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 3


def test_fp16_on_a_cpu_is_refused_before_any_work_as_for_inference(folders, weights, tmp_path):
    with pytest.raises(UsageError, match="fp16 is for GPUs"):
        training.train(config(folders, weights, tmp_path / "run", precision="fp16"))
    assert not (tmp_path / "run").exists()


def test_the_command_refuses_fp16_on_a_cpu_with_a_usage_error(folders, weights, tmp_path):
    result = CliRunner().invoke(app, ["train", *train_command(folders, weights, tmp_path / "run",
                                                                "--iterations", "1", "--precision", "fp16")])
    assert result.exit_code == 2 and "fp16 is for GPUs" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs a CUDA GPU")
def test_fp16_trains_with_loss_scaling(folders, weights, tmp_path):
    out = tmp_path / "run"
    training.train(config(folders, weights, out, iterations=2, precision="fp16", device="cuda"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["scaler"] is not None and all(torch.isfinite(v).all() for v in state["decoder"].values())


def test_learning_rate_flags_set_the_schedule(folders, weights, tmp_path):
    result = CliRunner().invoke(app, ["train", *train_command(folders, weights, tmp_path / "run", "--iterations", "3",
                                                                "--lr", "0.001", "--lr-decay", "0.5")])
    assert result.exit_code == 0, result.stderr
    rates = [json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rates == pytest.approx([0.001, 0.001 / 1.5, 0.001 / 2.0])
