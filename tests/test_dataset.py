"""`adain dataset` on small synthetic trees with class folders: the mirrored tree, reproducible
draws, shards, the manifest, resuming after SIGKILL, the style bank, and bad data."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from PIL import Image
from test_cli import adain, bad_input_cases, one_error_line
from test_inputs import VISIBLE_IMAGES, hidden_and_tif_tree

from adain_cli import UsageError, batch, dataset, jobs
from adain_cli.atomic import remove_stale_temporaries
from adain_cli.inputs import walk_images
from adain_cli.model import FeatureStats
from adain_cli.style_bank import StyleBank

SMALL = ["--style-size", "0"]


def make_tree(root: Path) -> Path:
    """content/{cat,dog}/ (JPEG and PNG, odd sizes) and styles/ (nested, two stems alike)."""
    for k, (cls, name) in enumerate([("cat", "a.JPEG"), ("cat", "b.png"), ("cat", "c.jpg"),
                                     ("dog", "a.JPEG"), ("dog", "d.jpg"), ("dog", "e.png")]):
        (root / "content" / cls).mkdir(parents=True, exist_ok=True)
        synthetic_image(36 + k, 32, seed=k).save(root / "content" / cls / name)
    for k, name in enumerate(["monet.jpg", "old/monet.jpg", "klee.png", "old/turner.jpg"]):
        (root / "styles" / name).parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(32, 34 + k, seed=20 + k).save(root / "styles" / name)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree shared by the module's tests, which only read it."""
    return make_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture
def run(weights_home: Path, tree: Path, tmp_path: Path):
    """`adain dataset TREE/content TREE/styles -o OUT ...` in this process."""
    def run_dataset(out: Path, *args: str | Path, content: Path | None = None, styles: Path | None = None):
        return adain("dataset", content or tree / "content", styles or tree / "styles", "-o", out,
                     "--style-bank", tmp_path / "bank", *SMALL, *args)
    return run_dataset


def rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def outputs(out: Path) -> dict[str, str]:
    """Every output under OUT (manifests aside) by relative path: a hash of its pixels."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and not path.name.startswith("manifest"):
            with Image.open(path) as image:
                found[path.relative_to(out).as_posix()] = hashlib.sha256(image.tobytes()).hexdigest()
    return found


# --- the tree and the names --------------------------------------------------------------------

def test_out_mirrors_the_content_tree_and_keeps_names_and_formats(run, tree: Path, tmp_path: Path):
    result = run(tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(outputs(tmp_path / "out")) == ["cat/a.JPEG", "cat/b.png", "cat/c.jpg", "dog/a.JPEG",
                                                 "dog/d.jpg", "dog/e.png"]
    with Image.open(tmp_path / "out" / "cat" / "a.JPEG") as image:
        assert (image.format, image.size) == ("JPEG", (36, 32))
    with Image.open(tmp_path / "out" / "dog" / "e.png") as image:
        assert (image.format, image.size) == ("PNG", (41, 32))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat", "dog", "manifest.csv"]


def test_ext_changes_every_output_format(run, tmp_path: Path):
    assert run(tmp_path / "out", "--ext", "webp").exit_code == 0
    assert sorted(outputs(tmp_path / "out")) == ["cat/a.webp", "cat/b.webp", "cat/c.webp", "dog/a.webp",
                                                 "dog/d.webp", "dog/e.webp"]


def test_several_styles_per_image_are_named_as_stylize_names_them_without_repeats(run, tmp_path: Path):
    assert run(tmp_path / "out", "--styles-per-image", "3").exit_code == 0
    table = rows(tmp_path / "out" / "manifest.csv")
    assert len(table) == 18
    by_image: dict[str, list[str]] = {}
    for row in table:
        by_image.setdefault(row["content"], []).append(row["style"])
    assert all(len(set(styles)) == 3 for styles in by_image.values())
    # Two styles are called "monet": their outputs carry their folders.
    labels = {"monet.jpg": "monet", "old/monet.jpg": "old-monet", "klee.png": "klee", "old/turner.jpg": "turner"}
    for row in table:
        stem, suffix = os.path.splitext(row["content"])
        assert row["output"] == f"{stem}_stylized_{labels[row['style']]}{suffix}"
        assert (tmp_path / "out" / row["output"]).is_file()


def test_more_styles_per_image_than_styles_goes_round_again_with_a_suffix(run, tmp_path: Path):
    result = run(tmp_path / "out", "--styles-per-image", "6", "--alpha", "0.5:1")
    assert result.exit_code == 0, result.output
    assert "6 styles per image from 4 styles" in result.stderr
    names = [row["output"] for row in rows(tmp_path / "out" / "manifest.csv") if row["content"] == "cat/b.png"]
    assert len(names) == len(set(names)) == 6
    assert sum(name.endswith("_2.png") for name in names) == 2


def test_walk_recurses_skips_hidden_files_and_survives_a_symlink_loop(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    for name in ("a/x.jpg", "a/b/y.PNG", "a/.z.jpg", "a/._x.jpg", ".cache/w.jpg", "a/notes.txt"):
        synthetic_image(16, 16).save(tmp_path / name, format="PNG")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    assert walk_images(tmp_path) == ["a/b/y.PNG", "a/x.jpg", "gone.jpg"]


# --- reproducible draws and shards ---------------------------------------------------------------

def test_draws_depend_only_on_the_seed_the_path_and_the_style_list():
    assert dataset.choose_styles(0, "cat/a.jpg", 80_000, 3) == dataset.choose_styles(0, "cat/a.jpg", 80_000, 3)
    assert dataset.choose_styles(1, "cat/a.jpg", 80_000, 3) != dataset.choose_styles(0, "cat/a.jpg", 80_000, 3)
    assert dataset.choose_styles(0, "cat/b.jpg", 80_000, 3) != dataset.choose_styles(0, "cat/a.jpg", 80_000, 3)
    assert sorted(dataset.choose_styles(0, "x", 5, 5)) == [0, 1, 2, 3, 4]
    alpha = dataset.draw_alpha(0, "cat/a.jpg", 0, 0.25, 0.75)
    assert 0.25 <= alpha <= 0.75 and alpha == round(alpha, 6)
    assert dataset.draw_alpha(0, "cat/a.jpg", 0, 0.6, 0.6) == 0.6


def test_styles_are_drawn_evenly():
    counts = Counter(dataset.choose_styles(7, f"img{i}.jpg", 4, 1)[0] for i in range(4000))
    assert set(counts) == {0, 1, 2, 3} and all(850 < n < 1150 for n in counts.values()), counts


def test_the_order_files_are_found_in_changes_nothing(weights_home: Path, tmp_path: Path):
    """Two copies of one tree, created in opposite orders, get the same plan."""
    plans = []
    for copy, order in (("one", 1), ("two", -1)):
        root = tmp_path / copy
        for k in list(range(6))[::order]:
            (root / "c" / f"k{k % 2}").mkdir(parents=True, exist_ok=True)
            synthetic_image(16, 16, seed=k).save(root / "c" / f"k{k % 2}" / f"{k}.png")
        for k in list(range(5))[::order]:
            (root / "s").mkdir(exist_ok=True)
            synthetic_image(16, 16, seed=k).save(root / "s" / f"s{k}.png")
        made = dataset.plan(root / "c", root / "s", tmp_path / f"out-{copy}", dataset.Options(2, 3, (0.2, 0.9)))
        plans.append([(j.content.relative_to(root), j.style.relative_to(root), j.alpha) for j in made.jobs])
    assert plans[0] == plans[1]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_everything(count: int):
    names = [f"n{i // 13:04d}/img_{i}.JPEG" for i in range(2000)]
    owners = [[s for s in range(count) if dataset.Shard(s, count).owns(name)] for name in names]
    assert all(len(o) == 1 for o in owners)
    sizes = Counter(o[0] for o in owners)
    assert all(abs(n - 2000 / count) < 0.15 * 2000 / count for n in sizes.values())


@pytest.mark.parametrize(("env", "expected"), [
    ({}, (0, 1, 0, "")),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, (3, 8, 3, "torchrun")),
    ({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "6", "SLURM_LOCALID": "1"}, (5, 6, 1, "srun")),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, (0, 1, 0, "")),  # the batch script itself, outside srun
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"},
     (2, 4, 0, "Slurm array")),
    ({"SLURM_ARRAY_TASK_ID": "20", "SLURM_ARRAY_TASK_COUNT": "11", "SLURM_ARRAY_TASK_STEP": "2"},
     (10, 11, 0, "Slurm array")),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"},
     (3, 6, 0, "Slurm array")),
])
def test_launchers_give_each_process_its_shard(env: dict[str, str], expected: tuple):
    shard = dataset.Shard.from_environment(env)
    assert (shard.index, shard.count, shard.local, shard.source) == expected


@pytest.mark.parametrize(("make", "message"), [
    (lambda: dataset.Shard.parse("4/4"), "from 0 to 3"),
    (lambda: dataset.Shard.parse("half"), "expected I/N"),
    (lambda: dataset.Shard.from_environment({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3"}),
     "not one of 3"),
    (lambda: dataset.Shard.from_environment({"RANK": "x", "WORLD_SIZE": "2"}), "not numbers"),
])
def test_bad_shards_are_usage_errors(make, message: str):
    with pytest.raises(UsageError, match=message):
        make()


def test_the_gpu_of_a_process_follows_its_local_rank_and_a_cpu_stays(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    local_3_of_4 = dataset.Shard.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"})
    assert local_3_of_4.device_name("auto") == "cuda:1"
    assert local_3_of_4.device_name("cpu") == "cpu"
    srun_task = dataset.Shard.from_environment({"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4",
                                                 "SLURM_LOCALID": "2"})
    assert srun_task.device_name("cuda") == "cuda:0"
    assert dataset.Shard.parse("3/4").device_name("auto") == "auto"  # --shard: one process, its own choice
    assert dataset.Shard().device_name("auto") == "auto"


def test_the_walk_finds_tif_and_skips_hidden_folders_for_the_dataset(weights_home: Path, tmp_path: Path):
    content = hidden_and_tif_tree(tmp_path / "content")
    (tmp_path / "styles").mkdir()
    synthetic_image(16, 16).save(tmp_path / "styles" / "s.png")
    made = dataset.plan(content, tmp_path / "styles", tmp_path / "out", dataset.Options())
    assert [job.content.relative_to(content).as_posix() for job in made.jobs] == VISIBLE_IMAGES


def test_one_process_and_two_shards_make_the_same_outputs(run, tmp_path: Path):
    assert run(tmp_path / "whole", "-n", "2", "--alpha", "0.3:1").exit_code == 0
    for index in range(2):
        result = run(tmp_path / "sharded", "-n", "2", "--alpha", "0.3:1", "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "sharded") == outputs(tmp_path / "whole")
    shard_rows = [row for i in range(2) for row in rows(tmp_path / "sharded" / f"manifest-0000{i}-of-00002.csv")]
    assert sorted(map(str, shard_rows)) == sorted(map(str, rows(tmp_path / "whole" / "manifest.csv")))
    assert len({row["output"] for row in shard_rows}) == len(shard_rows) == 12


# --- the manifest, resuming -----------------------------------------------------------------------

def test_the_manifest_has_a_row_per_output_with_relative_paths_and_alphas(run, tmp_path: Path):
    assert run(tmp_path / "out", "--alpha", "0.5:0.75").exit_code == 0
    table = rows(tmp_path / "out" / "manifest.csv")
    assert list(table[0]) == ["content", "style", "output", "alpha", "status", "error"]
    assert sorted(row["content"] for row in table) == sorted(row["output"] for row in table)
    assert {row["style"] for row in table} <= {"monet.jpg", "old/monet.jpg", "klee.png", "old/turner.jpg"}
    assert all(0.5 <= float(row["alpha"]) <= 0.75 and row["status"] == "written" and not row["error"]
               for row in table)


def test_running_again_continues_and_keeps_the_record(run, tmp_path: Path):
    assert run(tmp_path / "out").exit_code == 0
    first = rows(tmp_path / "out" / "manifest.csv")
    (tmp_path / "out" / "cat" / "b.png").unlink()
    again = run(tmp_path / "out", "--json")
    assert again.exit_code == 0
    summary = json.loads(again.stdout)
    assert (summary["written"], summary["resumed"], summary["failed"]) == (1, 5, 0)
    assert sorted(map(str, rows(tmp_path / "out" / "manifest.csv"))) == sorted(map(str, first))


def test_continuing_with_other_draws_is_refused(run, tmp_path: Path):
    assert run(tmp_path / "out", "--seed", "1").exit_code == 0
    before = outputs(tmp_path / "out")
    result = run(tmp_path / "out", "--seed", "2", "--alpha", "0.5")
    assert result.exit_code == 2
    one_error_line(result, "manifest.csv", "was made from", "--overwrite")
    assert outputs(tmp_path / "out") == before
    assert run(tmp_path / "out", "--seed", "2", "--alpha", "0.5", "--overwrite").exit_code == 0


def test_a_foreign_manifest_is_not_touched(run, tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.csv").write_text("id,label\n1,cat\n")
    result = run(tmp_path / "out")
    assert result.exit_code == 2
    one_error_line(result, "not an adain dataset manifest")
    assert (tmp_path / "out" / "manifest.csv").read_text() == "id,label\n1,cat\n"


def test_a_run_killed_with_sigkill_and_run_again_ends_as_an_uninterrupted_run(weights_home: Path, tmp_path: Path):
    root = tmp_path / "big"
    for k in range(40):
        (root / "content" / f"c{k % 4}").mkdir(parents=True, exist_ok=True)
        synthetic_image(64, 48, seed=k).save(root / "content" / f"c{k % 4}" / f"{k}.jpg")
    (root / "styles").mkdir()
    for k in range(3):
        synthetic_image(40, 40, seed=50 + k).save(root / "styles" / f"s{k}.png")
    command = [sys.executable, "-m", "adain_cli", "dataset", str(root / "content"), str(root / "styles"),
               "--alpha", "0.4:1", "--style-bank", str(tmp_path / "bank"), *SMALL, "-o"]
    env = {**os.environ, "ADAIN_HOME": str(weights_home)}
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, str(killed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(killed.rglob("*.jpg"))) < 8 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    made_before = len(list(killed.rglob("*.jpg")))
    assert 8 <= made_before < 40, "the run ended before it could be killed: make the tree bigger"
    # What a SIGKILL can leave in the middle of a write: a temporary file beside its output.
    (killed / "c1" / ".1.jpg.0123abcd.tmp").write_bytes(b"half an image")
    for out in (killed, tmp_path / "whole"):
        finished = subprocess.run([*command, str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr
    assert outputs(killed) == outputs(tmp_path / "whole")
    assert not [p for p in killed.rglob(".*")], "temporary files left in OUT"

    def key(row: dict[str, str]) -> tuple:
        return row["content"], row["style"], row["output"], row["alpha"]

    resumed, whole = rows(killed / "manifest.csv"), rows(tmp_path / "whole" / "manifest.csv")
    assert sorted(map(key, resumed)) == sorted(map(key, whole))
    # Outputs finished after their last row was flushed are "skipped" (found, not made by this run).
    assert {row["status"] for row in resumed} <= {"written", "skipped"}


def test_stale_temporaries_of_other_names_are_left_alone(tmp_path: Path):
    for name in (".a.jpg.0123abcd.tmp", ".b.jpg.0123abcd.tmp", ".a.jpg.tmp", ".hidden"):
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_temporaries(tmp_path, {"a.jpg"}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.jpg.tmp", ".b.jpg.0123abcd.tmp", ".hidden"]


# --- the style bank --------------------------------------------------------------------------------

def test_the_style_bank_is_reused_by_later_runs_and_renewed_when_a_style_changes(
    run, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    loads: list[Path] = []
    real = jobs.Settings.load_style
    monkeypatch.setattr(jobs.Settings, "load_style", lambda self, path: loads.append(path) or real(self, path))
    assert run(tmp_path / "one", "-n", "4").exit_code == 0
    assert len(loads) == 4
    entries = sorted((tmp_path / "bank").rglob("*.pt"))
    assert len(entries) == 4
    loads.clear()
    assert run(tmp_path / "two", "-n", "4").exit_code == 0
    assert loads == []
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    styles = tmp_path / "styles"
    styles.mkdir()
    for path in (tree / "styles").rglob("*.*"):
        (styles / path.relative_to(tree / "styles")).parent.mkdir(exist_ok=True)
        (styles / path.relative_to(tree / "styles")).write_bytes(path.read_bytes())
    assert run(tmp_path / "three", "-n", "4", styles=styles).exit_code == 0  # other paths: other entries
    loads.clear()
    synthetic_image(32, 34, seed=99).save(styles / "klee.png")
    os.utime(styles / "klee.png", ns=(1, 1))
    assert run(tmp_path / "four", "-n", "4", styles=styles).exit_code == 0
    assert loads == [styles / "klee.png"]
    assert len(sorted((tmp_path / "bank").rglob("*.pt"))) == 9


def test_a_damaged_bank_entry_is_encoded_again(stylizer, tree: Path, tmp_path: Path):
    settings = jobs.Settings(style_size=0)
    bank = StyleBank(tmp_path / "bank", stylizer, settings)
    style = tree / "styles" / "klee.png"
    stats = stylizer.style_stats(settings.load_style(style))
    bank.put(style, stats)
    [entry] = (tmp_path / "bank").rglob("*.pt")
    assert torch.equal(bank.get(style).mean, stats.mean)
    entry.write_bytes(entry.read_bytes()[:100])
    assert bank.get(style) is None


def test_torchrun_ranks_share_the_work_and_build_one_bank_at_once(weights_home: Path, tree: Path, tmp_path: Path,
                                                                   run):
    assert run(tmp_path / "whole", "-n", "2").exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "adain_cli",
         "dataset", tree / "content", tree / "styles", "-o", tmp_path / "out", "-n", "2",
         "--style-bank", tmp_path / "fresh-bank", *SMALL],
        # torchrun sets one thread per rank unless told: the sum order of a convolution follows the
        # thread count, so the same count as this process is what makes the pixels comparable.
        env={**os.environ, "ADAIN_HOME": str(weights_home), "OMP_NUM_THREADS": str(torch.get_num_threads())},
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("manifest*")) == [
        "manifest-00000-of-00002.csv", "manifest-00001-of-00002.csv"]
    assert outputs(tmp_path / "out") == outputs(tmp_path / "whole")
    assert len(list((tmp_path / "fresh-bank").rglob("*.pt"))) == 4
    assert not list((tmp_path / "fresh-bank").rglob("*.tmp"))


def test_coral_recolours_styles_per_image_so_the_bank_is_not_used(run, tmp_path: Path):
    assert run(tmp_path / "out", "--preserve-color").exit_code == 0
    assert not (tmp_path / "bank").exists()


def test_the_default_bank_is_in_the_user_cache_directory(weights_home: Path, tree: Path, tmp_path: Path,
                                                         private_cache: Path):
    result = adain("dataset", tree / "content", tree / "styles", "-o", tmp_path / "out", *SMALL)
    assert result.exit_code == 0, result.output
    used = {row["style"] for row in rows(tmp_path / "out" / "manifest.csv")}
    assert len(list((private_cache / "adain-cli" / "style-bank").rglob("*.pt"))) == len(used) >= 2  # one per style


# --- bad data and usage errors ----------------------------------------------------------------------

def test_bad_images_are_recorded_as_failed_and_the_run_goes_on(run, tmp_path: Path):
    content = tmp_path / "content"
    (content / "k").mkdir(parents=True)
    reasons = {path.name: reason for path, reason in bad_input_cases(content / "k").values()}  # and whole.jpg
    synthetic_image(300, 200).save(content / "k" / "huge.png")  # over --max-pixels, under the default
    (content / "k" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    reasons |= {"huge.png": "over the limit of 50,000", "dangling.jpg": "no such file"}
    result = run(tmp_path / "out", "--max-pixels", "50000", content=content)
    assert result.exit_code == 1
    table = {row["content"]: row for row in rows(tmp_path / "out" / "manifest.csv")}
    assert table["k/whole.jpg"]["status"] == "written"
    for name, reason in reasons.items():
        assert table[f"k/{name}"]["status"] == "failed" and reason in table[f"k/{name}"]["error"], table[f"k/{name}"]
        assert not (tmp_path / "out" / "k" / name).exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("adain: error: ")]
    assert len(errors) == len(reasons) == 7 and all(str(content) in line for line in errors)


def test_unicode_and_spaces_in_paths_work(run, tmp_path: Path):
    content, styles = tmp_path / "fotos y más" / "café crème", tmp_path / "pinturas"
    content.mkdir(parents=True)
    styles.mkdir()
    synthetic_image(33, 30).save(content / "über straße 1.jpg")
    synthetic_image(30, 30, seed=3).save(styles / "日本 画.png")
    result = run(tmp_path / "salida ñ", "-n", "1", content=tmp_path / "fotos y más", styles=styles)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "salida ñ" / "café crème" / "über straße 1.jpg").is_file()
    [row] = rows(tmp_path / "salida ñ" / "manifest.csv")
    assert row["style"] == "日本 画.png"


@pytest.mark.parametrize(("layout", "message"), [
    ("empty content", "no images in this tree"),
    ("empty styles", "no images in this tree"),
    ("missing content", "no such folder"),
    ("out is content", "OUT is inside CONTENT_DIR"),
    ("out inside content", "OUT is inside CONTENT_DIR"),
    ("out inside styles", "OUT is inside STYLE_DIR"),
    ("out is a file", "this is a file"),
    ("colliding outputs", "written by both"),
])
def test_trees_that_cannot_work_are_usage_errors_before_any_work(run, tree: Path, tmp_path: Path, layout: str,
                                                                 message: str):
    content, styles, out, extra = tree / "content", tree / "styles", tmp_path / "out", []
    if layout == "empty content":
        content = tmp_path / "empty"
        (content / "k").mkdir(parents=True)
        (content / "k" / "readme.txt").write_text("no images")
    elif layout == "empty styles":
        styles = tmp_path / "empty"
        styles.mkdir()
    elif layout == "missing content":
        content = tmp_path / "nowhere"
    elif layout == "out is content":
        content = out = tmp_path / "copy"
        (out / "k").mkdir(parents=True)
        synthetic_image(20, 20).save(out / "k" / "a.jpg")
    elif layout == "out inside content":
        content, out = tmp_path / "copy", tmp_path / "copy" / "stylized"
        content.mkdir()
        synthetic_image(20, 20).save(content / "a.jpg")
    elif layout == "out inside styles":
        out = tmp_path / "styles" / "out"
        styles = tmp_path / "styles"
        styles.mkdir()
        synthetic_image(20, 20).save(styles / "s.jpg")
    elif layout == "out is a file":
        out.write_text("a file")
    elif layout == "colliding outputs":
        content = tmp_path / "pair"
        content.mkdir()
        synthetic_image(20, 20).save(content / "a.jpg")
        synthetic_image(20, 20).save(content / "a.png")
        extra = ["--ext", "png"]
    before = sorted(tmp_path.rglob("*"))
    result = run(out, *extra, content=content, styles=styles)
    assert result.exit_code == 2, result.output
    one_error_line(result, message)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("option", "message"), [
    (["--alpha", "1.5"], "alpha must be between 0 and 1"),
    (["--alpha", "0.9:0.2"], "from low to high"),
    (["--alpha", "lots"], "expected a number or a range"),
    (["--ext", "gif"], "unknown output extension"),
    (["--shard", "2/2"], "from 0 to 1"),
    (["--styles-per-image", "0"], "--styles-per-image"),
])
def test_bad_options_are_usage_errors(run, tmp_path: Path, option: list[str], message: str):
    result = run(tmp_path / "out", *option)
    assert result.exit_code == 2
    one_error_line(result, message)
    assert not (tmp_path / "out").exists()


def test_a_bank_that_cannot_be_created_is_a_usage_error(weights_home: Path, tree: Path, tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    result = adain("dataset", tree / "content", tree / "styles", "-o", tmp_path / "out", *SMALL,
                   "--style-bank", tmp_path / "file" / "bank")
    assert result.exit_code == 2
    one_error_line(result, "cannot create the style bank")


# --- reporting -----------------------------------------------------------------------------------

def test_json_prints_one_summary_object(run, tmp_path: Path):
    result = run(tmp_path / "out", "--json", "--shard", "0/1")
    summary = json.loads(result.stdout)
    assert summary["written"] == summary["outputs"] == 6
    assert summary["manifest"] == str(tmp_path / "out" / "manifest.csv")
    assert summary["images_per_second"] > 0


def test_without_a_terminal_progress_comes_as_plain_lines(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from adain_cli.cli import _progress

    monkeypatch.setattr(_progress.Counter, "INTERVAL", 0.0)
    result = run(tmp_path / "out", "--shard", "1/2")
    assert result.exit_code == 0
    progress = [line for line in result.stderr.splitlines() if "images/s" in line]
    assert progress and all(line.startswith("[1/2] ") for line in progress)
    assert progress[-1].startswith(f"[1/2] {len(rows(tmp_path / 'out' / 'manifest-00001-of-00002.csv'))}/")


# --- the pieces underneath ----------------------------------------------------------------------------

def test_render_batch_takes_one_alpha_per_pair(stylizer):
    contents = stylizer.encode_contents(torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)))
    style = stylizer.style_stats(torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1)))
    together = stylizer.render_batch(contents, [style, style], [0.3, 0.8])
    for i, alpha in enumerate([0.3, 0.8]):
        alone = stylizer.render(contents[i], style, alpha)
        assert torch.allclose(together[i:i + 1], alone, atol=1e-5)
    assert torch.equal(stylizer.render_batch(contents, [style, style], [0.5, 0.5]),
                       stylizer.render_batch(contents, [style, style], 0.5))
    with pytest.raises(UsageError, match="alpha"):
        stylizer.render_batch(contents, [style, style], [0.5, 2.0])


def test_a_job_with_its_own_alpha_says_so(tmp_path: Path):
    job = batch.Job(tmp_path / "c.jpg", tmp_path / "s.jpg", tmp_path / "o.jpg", 0.25)
    assert job.describe()["alpha"] == 0.25
    assert "alpha" not in batch.Job(tmp_path / "c.jpg", tmp_path / "s.jpg", tmp_path / "o.jpg").describe()


def test_stats_from_the_bank_give_the_pixels_fresh_ones_give(stylizer, tree: Path, tmp_path: Path):
    settings = jobs.Settings(content_size=0, style_size=0)
    style = tree / "styles" / "klee.png"
    bank = StyleBank(tmp_path / "bank", stylizer, settings)
    planned = [batch.Job(tree / "content" / "cat" / "b.png", style, tmp_path / f"{name}.png")
               for name in ("fresh", "banked")]
    batch.run(stylizer, planned[:1], settings, bank=bank)
    assert bank.stored == 1 and bank.hits == 0
    batch.run(stylizer, planned[1:], settings, bank=bank)
    assert bank.hits == 1
    fresh, banked = (Image.open(tmp_path / f"{name}.png").tobytes() for name in ("fresh", "banked"))
    assert fresh == banked
    assert isinstance(bank.get(style), FeatureStats)
