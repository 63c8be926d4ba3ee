"""Batches: every pair, each image encoded once, inputs never clobbered, failures contained."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from PIL import Image

from adain_cli import Stylizer, UsageError, batch, images, jobs
from adain_cli.inputs import expand
from adain_cli.model import Encoder
from adain_cli.style_cache import StyleCache

CPU_OUT_OF_MEMORY = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                                 "you tried to allocate 123456789 bytes. Error code 12 (Cannot allocate memory)")


@pytest.fixture
def encoder_calls(stylizer):
    calls = []
    handle = stylizer.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    yield calls
    handle.remove()


def run(stylizer, root: Path, out: Path, **settings) -> list[jobs.Outcome]:
    planned = batch.plan(expand(root / "content"), expand(root / "style"), out)
    settings = {"content_size": 0, "style_size": 0, **settings}  # keep the small test images small
    return batch.run(stylizer, planned, jobs.Settings(**settings))


def test_each_content_and_each_style_is_encoded_once_in_a_3x2_batch(stylizer, images_dir, tmp_path, encoder_calls):
    results = run(stylizer, images_dir, tmp_path / "out")
    assert [r.status for r in results] == ["written"] * 6
    assert len(encoder_calls) == 3 + 2


def test_coral_reencodes_the_recoloured_style_per_pair_but_decodes_it_once(
    stylizer, images_dir, tmp_path, encoder_calls, monkeypatch
):
    decoded = []
    real_load = images.load_image
    monkeypatch.setattr(images, "load_image", lambda path, *a: decoded.append(path) or real_load(path, *a))
    run(stylizer, images_dir, tmp_path / "out", color_mode="coral")
    assert len(encoder_calls) == 3 + 6
    assert len(decoded) == 3 + 2, [p.name for p in decoded]


def test_directory_outputs_are_named_content_stylized_style(stylizer, images_dir, tmp_path):
    run(stylizer, images_dir, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"c{c}_stylized_s{s}.png" for c in range(3) for s in range(2)]
    assert Image.open(tmp_path / "out" / "c1_stylized_s0.png").size == (37, 48)


def test_one_pair_writes_the_output_file_itself(tmp_path, images_dir):
    c, s = images_dir / "content" / "c0.png", images_dir / "style" / "s0.jpg"
    assert batch.plan([c], [s], tmp_path / "x.jpg") == [batch.Job(c, s, tmp_path / "x.jpg")]


def test_one_pair_into_an_existing_directory_uses_the_pattern(tmp_path, images_dir):
    c, s = images_dir / "content" / "c0.png", images_dir / "style" / "s0.jpg"
    [job] = batch.plan([c], [s], tmp_path, ext="webp")
    assert job.output == tmp_path / "c0_stylized_s0.webp"


def test_output_equal_to_an_input_is_refused(images_dir):
    c, s = images_dir / "content" / "c0.png", images_dir / "style" / "s0.jpg"
    with pytest.raises(UsageError, match="output is the input file"):
        batch.plan([c], [s], c)


def test_batch_output_colliding_with_an_input_is_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.png", "b.png", "a_stylized_b.png"):
        synthetic_image(16, 16).save(folder / name)
    with pytest.raises(UsageError, match="refusing to overwrite an input"):
        batch.plan(expand(folder), expand(folder), folder)


def test_two_pairs_writing_one_file_is_refused(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        synthetic_image(16, 16).save(tmp_path / sub / "same.png")
    with pytest.raises(UsageError, match="written by both"):
        batch.plan([tmp_path / "x" / "same.png", tmp_path / "y" / "same.png"], [tmp_path / "x" / "same.png"],
                   tmp_path / "out")


def test_several_outputs_need_a_directory(images_dir, tmp_path):
    with pytest.raises(UsageError, match="6 outputs need a directory"):
        batch.plan(expand(images_dir / "content"), expand(images_dir / "style"), tmp_path / "out.png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="and this is a file"):
        batch.plan(expand(images_dir / "content"), expand(images_dir / "style"), tmp_path / "file")


def test_unknown_extensions_are_usage_errors(images_dir, tmp_path):
    c, s = [images_dir / "content" / "c0.png"], [images_dir / "style" / "s0.jpg"]
    with pytest.raises(UsageError, match="unknown output extension '.gif'"):
        batch.plan(c, s, tmp_path / "out.gif")
    with pytest.raises(UsageError, match="unknown output extension 'gif'"):
        batch.plan(c, s, tmp_path, ext="gif")


def test_existing_outputs_are_skipped_unless_overwrite(stylizer, images_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "c0_stylized_s0.png").write_bytes(b"keep me")
    results = run(stylizer, images_dir, out)
    assert [r.status for r in results].count("skipped") == 1
    assert (out / "c0_stylized_s0.png").read_bytes() == b"keep me"
    run(stylizer, images_dir, out, overwrite=True)
    assert Image.open(out / "c0_stylized_s0.png").size == (40, 33)


def test_an_output_is_there_when_its_name_leads_to_something_and_a_dangling_link_is_not(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    assert jobs.skipped(tmp_path / "a.png", overwrite=False) and jobs.skipped(tmp_path / "link.png", overwrite=False)
    assert not jobs.skipped(tmp_path / "a.png", overwrite=True)
    assert not jobs.skipped(tmp_path / "dangling.png", overwrite=False)
    assert not jobs.skipped(tmp_path / "new.png", overwrite=False)


def test_a_folder_of_frames_is_there_when_it_holds_a_frame(tmp_path):
    frames = "frame_*.png"
    assert not jobs.exists(tmp_path / "frames", frames)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "notes.txt").write_text("")
    (tmp_path / "frames" / ".frame_000001.png.0123abcd.tmp").write_bytes(b"")  # a write under way
    assert not jobs.exists(tmp_path / "frames", frames)
    (tmp_path / "frames" / "frame_000001.png").write_bytes(b"")
    assert jobs.skipped(tmp_path / "frames", overwrite=False, frames=frames)
    assert not jobs.skipped(tmp_path / "frames", overwrite=True, frames=frames)


def test_a_broken_content_fails_its_pairs_and_the_rest_are_written(stylizer, images_dir, tmp_path):
    (images_dir / "content" / "c1.png").write_text("not an image")
    results = run(stylizer, images_dir, tmp_path / "out")
    failed = [r for r in results if r.status == "failed"]
    assert [r.job.content.name for r in failed] == ["c1.png", "c1.png"]
    assert all("c1.png: not an image file" in r.error for r in failed)
    assert sum(r.status == "written" for r in results) == 4
    assert jobs.exit_code(results) == 1
    assert not any("c1_" in p.name for p in (tmp_path / "out").iterdir())


def test_a_broken_style_fails_its_pairs_and_the_rest_are_written(stylizer, images_dir, tmp_path):
    (images_dir / "style" / "s1.jpg").write_bytes(b"")
    results = run(stylizer, images_dir, tmp_path / "out")
    assert [r.job.style.name for r in results if r.status == "failed"] == ["s1.jpg"] * 3
    assert sum(r.status == "written" for r in results) == 3


def test_results_serialise_for_json(stylizer, images_dir, tmp_path):
    [first, *_] = run(stylizer, images_dir, tmp_path / "out")
    record = first.as_dict()
    assert set(record) == {"content", "style", "output", "status", "seconds", "error"}
    assert record["status"] == "written" and record["error"] is None and record["seconds"] > 0


@pytest.mark.parametrize("bad", [{"alpha": 1.5}, {"alpha": float("nan")}, {"content_size": 8},
                                 {"style_size": -1}, {"quality": 0}, {"color_mode": "sepia"}])
def test_settings_refuse_values_that_cannot_work(bad):
    with pytest.raises(UsageError):
        jobs.Settings(**bad)


def test_summary_counts_outcomes(stylizer, images_dir, tmp_path):
    results = run(stylizer, images_dir, tmp_path / "out")
    assert jobs.summary(results).startswith("6 written, 0 skipped, 0 failed in ")


def test_styles_are_decoded_only_a_few_ahead_of_their_use(stylizer, tmp_path):
    submitted = []

    class RecordingPool:
        def submit(self, fn, path, *args):
            submitted.append(path)
            future = Future()
            future.set_result(torch.rand(1, 3, 16, 16))
            return future

    styles = [tmp_path / f"s{i}.png" for i in range(6)]
    cache = StyleCache(stylizer)
    cache.expect(styles + styles, lambda path: pytest.fail("decoded on the pool, not here"), RecordingPool(),
                 "style", ahead=2)
    assert submitted == styles[:2]
    cache.stats(styles[0], lambda: pytest.fail("fetched ahead: not decoded again"))
    assert submitted == styles[:3]  # one used, one more started: never more than two waiting


def encoder_failing(monkeypatch, fails, error: Exception) -> None:
    """The encoder raises `error` on the inputs `fails(image)` picks, as if they did not fit in memory."""
    real = Encoder.forward

    def forward(self, image):
        if fails(image):
            raise error
        return real(self, image)

    monkeypatch.setattr(Encoder, "forward", forward)


@pytest.mark.parametrize("error,reason", [(CPU_OUT_OF_MEMORY, "c1.png: out of memory (try a smaller --content-size"),
                                          (ValueError("unexpected"), "c1.png: ValueError: unexpected")])
def test_a_content_that_fails_to_encode_fails_its_pairs_and_the_rest_are_written(
    stylizer, images_dir, tmp_path, monkeypatch, error, reason
):
    encoder_failing(monkeypatch, lambda image: tuple(image.shape[-2:]) == (48, 40), error)  # c1, 37x48 padded
    results = run(stylizer, images_dir, tmp_path / "out")
    failed = [r for r in results if r.status == "failed"]
    assert [r.job.content.name for r in failed] == ["c1.png", "c1.png"]
    assert all(f"{images_dir / 'content'}/{reason}" in r.error and "\n" not in r.error for r in failed)
    assert sum(r.status == "written" for r in results) == 4 and jobs.exit_code(results) == 1


def test_a_style_that_fails_to_encode_fails_its_pairs_and_the_rest_are_written(
    stylizer, images_dir, tmp_path, monkeypatch
):
    encoder_failing(monkeypatch, lambda image: tuple(image.shape[-2:]) == (60, 35), CPU_OUT_OF_MEMORY)  # s1
    results = run(stylizer, images_dir, tmp_path / "out")
    assert [r.job.style.name for r in results if r.status == "failed"] == ["s1.jpg"] * 3
    assert all("s1.jpg: out of memory" in r.error for r in results if r.status == "failed")
    assert sum(r.status == "written" for r in results) == 3


def test_contents_that_fail_to_encode_together_are_encoded_one_by_one(stylizer, tmp_path, monkeypatch):
    for folder, count in (("content", 3), ("style", 1)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            synthetic_image(32, 24, seed=i + 10 * (folder == "style")).save(tmp_path / folder / f"{folder[0]}{i}.png")
    black = Image.new("RGB", (32, 24))
    black.save(tmp_path / "content" / "c1.png")  # the one that cannot be encoded
    encoder_failing(monkeypatch, lambda image: len(image) > 1 or bool((image[:, :, :4, :4] == 0).all()),
                    ValueError("cannot"))
    batched = Stylizer(stylizer.encoder, stylizer.decoder, "cpu", batch_size=3)
    planned = batch.plan(expand(tmp_path / "content"), expand(tmp_path / "style"), tmp_path / "out")
    results = batch.run(batched, planned, jobs.Settings(content_size=0, style_size=0))
    assert [(r.job.content.name, r.status) for r in results] == [
        ("c0.png", "written"), ("c1.png", "failed"), ("c2.png", "written")]
