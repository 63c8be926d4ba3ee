"""The scenario benchmark runs end to end at smoke sizes (the real figures are in BENCHMARKS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scenarios.py"


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
