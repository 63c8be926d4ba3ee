"""A GPU that is there but unusable is said, with the reason and the fix, not quietly replaced by the CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from typer.testing import CliRunner

from adain_cli import device
from adain_cli.cli import app

DRIVER_TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). "
                  "Please update your GPU driver by downloading and installing a new version from the URL: "
                  "http://www.nvidia.com/Download/index.aspx")


@pytest.fixture
def nvidia_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose driver shows an NVIDIA GPU that torch cannot initialise (its driver is too old)."""
    version = tmp_path / "nvidia-version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82.01  Tue Oct 26 21:21:53 UTC 2021\n")
    monkeypatch.setattr(device, "NVIDIA_DRIVER_VERSION", version, raising=False)

    def is_available() -> bool:
        warnings.warn(DRIVER_TOO_OLD, UserWarning, stacklevel=1)  # how torch reports it
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.version, "cuda", "13.0")


@pytest.fixture
def no_nvidia_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "NVIDIA_DRIVER_VERSION", tmp_path / "absent", raising=False)
    monkeypatch.setattr(device, "NVIDIA_DEVICE", tmp_path / "absent-too", raising=False)
    monkeypatch.setattr(device.shutil, "which", lambda name: None)


def test_info_says_why_a_visible_gpu_is_not_used_and_how_to_fix_it(nvidia_gpu, weights_home):
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("gpu: ")]
    assert "driver 470.82.01" in line and "built for CUDA 13.0" in line
    assert "The NVIDIA driver on your system is too old (found version 11040)" in line
    assert "update the NVIDIA driver" in line and "pytorch.org" in line


def test_a_cpu_only_torch_is_named_as_the_reason(nvidia_gpu, monkeypatch, weights_home):
    monkeypatch.setattr(torch.version, "cuda", None)
    result = CliRunner().invoke(app, ["info", "--json"])
    assert "CPU-only build" in result.stdout and "install a CUDA build of torch" in result.stdout


def test_stylize_on_auto_says_it_once_on_stderr_and_runs_on_the_cpu(nvidia_gpu, weights_home, tmp_path):
    synthetic_image(24, 24, seed=1).save(tmp_path / "c.png")
    synthetic_image(24, 24, seed=2).save(tmp_path / "s.png")
    result = CliRunner().invoke(app, ["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"),
                                      "-o", str(tmp_path / "o.png"), "--content-size", "0"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "NVIDIA GPU is visible" in line]
    assert len(warned) == 1 and warned[0].startswith("adain: warning: ") and "running on the CPU" in warned[0]
    assert (tmp_path / "o.png").exists()


def test_asking_for_the_cpu_is_not_warned_about(nvidia_gpu, weights_home, tmp_path):
    synthetic_image(24, 24).save(tmp_path / "c.png")
    result = CliRunner().invoke(app, ["stylize", str(tmp_path / "c.png"), str(tmp_path / "c.png"),
                                      "-o", str(tmp_path / "o.png"), "--device", "cpu", "--content-size", "0",
                                      "--style-size", "0"])
    assert result.exit_code == 0 and "NVIDIA" not in result.stderr


def test_no_gpu_means_nothing_to_say(no_nvidia_gpu):
    assert device.unusable_gpu() is None
