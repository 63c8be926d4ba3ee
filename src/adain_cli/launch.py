"""Which process this is among those a launcher started, and which device it takes.

The launchers say it in environment variables: torchrun (RANK, WORLD_SIZE, LOCAL_RANK), srun
(SLURM_PROCID among SLURM_STEP_NUM_TASKS, SLURM_LOCALID on its machine) and Slurm job arrays
(SLURM_ARRAY_TASK_ID among SLURM_ARRAY_TASK_COUNT); an array of srun steps combines the last
two. `adain dataset` takes its shard from any of them; `adain train` forms a process group
only under torchrun, the one launcher that also sets the rendezvous a group needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .device import cuda_available
from .errors import UsageError


@dataclass(frozen=True)
class Launch:
    """This process: `rank` of `world`, `local` on its machine, and the launcher that said so."""

    rank: int = 0
    world: int = 1
    local: int = 0
    source: str = ""  # "torchrun", "srun" or "Slurm array"; "" when no launcher started this process

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the process that speaks for all."""
        return self.rank == 0

    def device_name(self, name: str) -> str:
        """The device `name` means for this process: under a launcher, `auto` or `cuda` is the local
        rank's GPU (see local_device_name); a process started alone keeps `name`."""
        return local_device_name(name, self.local) if self.source else name


def local_device_name(name: str, local: int) -> str:
    """`auto` or `cuda` for the process of local rank `local`: GPU `local` modulo the GPUs this
    process sees (so that a launcher that gives each task one GPU of its own also works);
    anything else, or a machine without CUDA, keeps `name`."""
    if name in ("auto", "cuda") and cuda_available():
        return f"cuda:{local % torch.cuda.device_count()}"
    return name


def from_environment(env: Mapping[str, str] = os.environ) -> Launch:
    """What any launcher (torchrun, srun, a Slurm array) says about this process; Launch() when none did."""
    try:
        started = _torchrun(env)
        if started is not None:
            return started
        task, tasks = int(env.get("SLURM_PROCID", "0")), int(env.get("SLURM_STEP_NUM_TASKS", "1"))
        local = int(env.get("SLURM_LOCALID", "0"))
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            element, elements = _array_element(env)
            return Launch(element * tasks + task, elements * tasks, local, "Slurm array")
        if "SLURM_STEP_NUM_TASKS" in env:  # inside srun; a batch script's own SLURM_NTASKS is not a share
            return Launch(task, tasks, local, "srun")
    except ValueError:
        raise _not_numbers() from None
    return Launch()


def process_group(env: Mapping[str, str] = os.environ) -> Launch:
    """This process's place in a torch.distributed group: torchrun's ranks when it started two or
    more; Launch() otherwise (srun tasks and array elements each run alone: they have no rendezvous)."""
    try:
        started = _torchrun(env)
    except ValueError:
        raise _not_numbers() from None
    return started if started is not None and started.world > 1 else Launch()


def _torchrun(env: Mapping[str, str]) -> Launch | None:
    if "RANK" in env and "WORLD_SIZE" in env:
        return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")), "torchrun")
    return None


def _not_numbers() -> UsageError:
    return UsageError("the launcher's RANK/WORLD_SIZE or SLURM_* variables are not numbers")


def _array_element(env: Mapping[str, str]) -> tuple[int, int]:
    """(index from 0, count) of this Slurm array element; `--array=1-8` or `0-30:2` map to 0..N-1."""
    count = int(env["SLURM_ARRAY_TASK_COUNT"])
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    step = int(env.get("SLURM_ARRAY_TASK_STEP", "1")) or 1
    offset = int(env["SLURM_ARRAY_TASK_ID"]) - first
    if offset % step or not 0 <= offset // step < count:
        raise UsageError(f"Slurm array task {env['SLURM_ARRAY_TASK_ID']} is not one of {count} evenly spaced "
                         f"tasks from {first}: use --array=0-{count - 1}, or --shard I/N")
    return offset // step, count
