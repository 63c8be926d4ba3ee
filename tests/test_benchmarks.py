"""The benchmarks that must not rot run end to end at smoke sizes (the real figures are in BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "scenarios.py"
SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_scenario_benchmark_runs_at_smoke_sizes():
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--modes", "baseline", "fp32"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("pair512", "baseline"), ("pair512", "fp32"), ("batch4x4", "baseline"), ("batch4x4", "fp32"),
        ("1080p", "baseline"), ("1080p", "fp32"), ("cuda256", "fp32"),
    ]
    whole_process, throughput = rows[:-1], rows[-1]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in whole_process)
    assert float(throughput[2]) > 0  # images/s of the GPU throughput code, run on whatever is here


# The GPU script's rows, by group: what the issue asks it to measure.
GPU_ROWS = {
    "correctness": {"device_vs_cpu", "bf16", "fp16", "tiled", "max_memory", "oom_retry"},
    "throughput": {f"{size}.{precision}" for size in ("256", "512", "1080p") for precision in ("fp32", "bf16", "fp16")},
    "video": {"end_to_end", "decode", "encode", "network", "busy", "nvdec"},
    "dataset": {"threads", "processes", "keeps_up"},
    "serve": {"throughput", "latency", "errors"},
    "train": {"fp32", "bf16", "160k"},
    "compile": {"correctness", "256", "512", "1080p"},
}


def run_gpu_script(tmp_path: Path, *options: str, path: Path | None = None,
                   ) -> tuple[subprocess.CompletedProcess[str], dict]:
    """benchmarks/gpu.py --quick --device cpu: what it did, and its JSON. `path` goes first on the Python path."""
    out = tmp_path / "gpu.json"
    paths = [str(p) for p in (path, SRC) if p is not None]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--quick", "--device", "cpu", "--json",
                           str(out), *options], capture_output=True, text=True, timeout=600, env=env)
    return done, json.loads(out.read_text()) if out.exists() else {}


def test_the_gpu_script_fills_every_row_on_a_cpu(tmp_path):
    """Every figure of the GPU run gets a status on a CPU at tiny sizes: measured where a CPU can, else
    skipped with the reason; none fails. The speed targets are not judged off a GPU."""
    done, table = run_gpu_script(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["id"]: row for row in table["rows"]}
    assert set(rows) == {f"{group}.{name}" for group, names in GPU_ROWS.items() for name in names}
    for row in rows.values():
        assert row["holds"] in ("yes", "no", "n/a", "skipped"), row
        assert row["holds"] != "skipped" or row["note"], row  # a skip says why
    assert rows["correctness.device_vs_cpu"]["holds"] == "yes"
    assert rows["correctness.tiled"]["holds"] == "yes" and rows["correctness.tiled"]["data"]["psnr_db"] > 50
    assert rows["correctness.fp16"]["holds"] == "skipped" and "GPU" in rows["correctness.fp16"]["note"]
    assert rows["correctness.oom_retry"]["holds"] == "skipped"
    measured = ["throughput.256.fp32", "video.end_to_end", "video.decode", "video.encode", "dataset.threads",
                "dataset.processes", "serve.throughput", "serve.latency", "train.fp32", "train.160k"]
    for id in measured:
        assert rows[id]["holds"] == "n/a" and rows[id]["value"], rows[id]  # measured, target not judged here
    assert rows["throughput.256.fp32"]["data"]["flops_per_image"] > 0
    assert rows["serve.errors"]["holds"] == "yes"
    facts = table["facts"]
    assert facts["sizes"] == "quick" and facts["device"] == "cpu" and facts["torch"]
    assert "adain-cli GPU figures" in done.stdout and "holds" in done.stdout


def test_a_group_whose_package_is_absent_says_so_and_the_others_run(tmp_path):
    """As on the GPU machine without its wheels: PyAV does not import, so the video rows say so, and
    the next group still runs."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "av.py").write_text("raise ImportError('PyAV blocked for this test')\n")
    done, table = run_gpu_script(tmp_path, "--groups", "video", "train", path=blocker)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["id"]: row for row in table["rows"]}
    for name in GPU_ROWS["video"]:
        assert rows[f"video.{name}"]["holds"] == "skipped", rows[f"video.{name}"]
        assert rows[f"video.{name}"]["note"].startswith("absent: av (ImportError: PyAV blocked"), rows[f"video.{name}"]
    assert rows["train.fp32"]["holds"] == "n/a" and rows["train.fp32"]["value"]
    assert rows["serve.throughput"]["note"] == "not in --groups"
    assert table["facts"]["pyav"] is None
