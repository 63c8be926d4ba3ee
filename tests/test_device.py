"""Devices: a GPU that is there but unusable is said, with the reason and the fix, not quietly replaced by
the CPU; each launcher's process finds its rank and its GPU; one precision and layout rule for all."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from typer.testing import CliRunner

from adain_cli import UsageError, device, execution, launch
from adain_cli.cli import app
from adain_cli.execution import Execution

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


# --- launchers: which process this is, and which GPU it takes ------------------------------------

@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine on which torch sees two CUDA devices."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}
SRUN = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "6", "SLURM_LOCALID": "1"}
ARRAY = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}


@pytest.mark.parametrize(("env", "expected"), [
    ({}, launch.Launch(0, 1, 0, "")),
    (TORCHRUN, launch.Launch(3, 4, 3, "torchrun")),
    (SRUN, launch.Launch(5, 6, 1, "srun")),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, launch.Launch()),  # a batch script itself, outside srun
    (ARRAY, launch.Launch(2, 4, 0, "Slurm array")),
    ({**ARRAY, "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1"},
     launch.Launch(5, 8, 1, "Slurm array")),  # srun steps inside an array element
])
def test_every_launcher_says_rank_world_and_local_rank(env: dict[str, str], expected: launch.Launch):
    assert launch.from_environment(env) == expected


@pytest.mark.parametrize("env", [{}, SRUN, ARRAY, {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}])
def test_only_torchrun_with_several_ranks_makes_a_process_group(env: dict[str, str]):
    assert launch.process_group(env) == launch.Launch()


def test_torchrun_ranks_make_a_process_group_and_only_rank_0_is_main():
    assert launch.process_group(TORCHRUN) == launch.Launch(3, 4, 3, "torchrun")
    assert not launch.process_group(TORCHRUN).main
    assert launch.process_group({**TORCHRUN, "RANK": "0", "LOCAL_RANK": "0"}).main


def test_launcher_variables_that_are_not_numbers_are_usage_errors():
    for read in (launch.from_environment, launch.process_group):
        with pytest.raises(UsageError, match="not numbers"):
            read({"RANK": "x", "WORLD_SIZE": "2"})


def test_a_local_rank_takes_its_gpu_modulo_the_gpus_it_sees(two_gpus):
    assert launch.Launch(3, 4, 3, "torchrun").device_name("auto") == "cuda:1"
    assert launch.Launch(2, 4, 2, "srun").device_name("cuda") == "cuda:0"
    assert launch.Launch(3, 4, 3, "torchrun").device_name("cpu") == "cpu"
    assert launch.Launch(3, 4, 3, "torchrun").device_name("cuda:0") == "cuda:0"  # asked for: kept
    assert launch.Launch().device_name("auto") == "auto"  # started alone: whatever `auto` finds


def test_without_cuda_a_local_rank_keeps_its_device_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launch.Launch(3, 4, 3, "torchrun").device_name("auto") == "auto"


# --- precision: one rule for inference and training ------------------------------------------------

@pytest.mark.parametrize("training", [False, True])
def test_fp16_on_a_cpu_is_refused_for_inference_and_training_alike(training: bool):
    with pytest.raises(UsageError, match="fp16 is for GPUs"):
        device.compute_dtype("fp16", torch.device("cpu"), training=training)


def test_bf16_on_a_cpu_without_native_bf16_is_refused_for_inference_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(UsageError, match="no fast bf16"):
        device.compute_dtype("bf16", torch.device("cpu"))
    assert device.compute_dtype("bf16", torch.device("cpu"), training=True) == torch.bfloat16


def test_the_execution_layer_refuses_fp16_on_a_cpu():
    with pytest.raises(UsageError, match="fp16 is for GPUs"):
        Execution.resolve("cpu", "fp16")


@pytest.mark.parametrize(("kind", "inference", "training"), [
    ("cpu", torch.channels_last, torch.contiguous_format),
    ("cuda", torch.channels_last, torch.channels_last),
    ("mps", torch.contiguous_format, torch.contiguous_format),
])
def test_one_memory_layout_rule_for_inference_and_training(kind: str, inference, training):
    assert execution.memory_layout(torch.device(kind)) == inference
    assert execution.memory_layout(torch.device(kind), training=True) == training
    assert Execution(torch.device(kind), torch.float32).layout == inference
    assert Execution.for_training(torch.device(kind)).layout == training
