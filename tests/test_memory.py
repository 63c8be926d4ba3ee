"""Memory budgets honour the limits of the container or batch job a process runs in (cgroups)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from adain_cli import memory
from adain_cli.cli import app

CPU = torch.device("cpu")
GB = 10**9


def fake_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str,
                levels: list[tuple[str, int | str, int, int]]) -> None:
    """This process in a cgroup hierarchy of `levels`, outermost first: (name, limit or "max", usage,
    reclaimable page cache). The innermost level is the process's own cgroup."""
    root = tmp_path / "sys-fs-cgroup"
    base = root if version == "v2" else root / "memory"
    folder = base
    for name, limit, usage, cache in levels:
        folder = folder / name
        folder.mkdir(parents=True)
        if version == "v2":
            (folder / "memory.max").write_text(f"{limit}\n")
            (folder / "memory.current").write_text(f"{usage}\n")
            (folder / "memory.stat").write_text(f"anon {usage - cache}\ninactive_file {cache}\n")
        else:
            (folder / "memory.limit_in_bytes").write_text(f"{9223372036854771712 if limit == 'max' else limit}\n")
            (folder / "memory.usage_in_bytes").write_text(f"{usage}\n")
            (folder / "memory.stat").write_text(f"cache {cache}\ntotal_inactive_file {cache}\n")
    own = "/" + str(folder.relative_to(base))
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n" if version == "v2" else f"12:cpu,cpuacct:{own}\n7:memory:{own}\n")
    monkeypatch.setattr(memory, "CGROUP_ROOT", root, raising=False)
    monkeypatch.setattr(memory, "PROC_SELF_CGROUP", proc, raising=False)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_container_limit_bounds_what_is_free(tmp_path, monkeypatch, version):
    fake_cgroup(tmp_path, monkeypatch, version, [("job", 2 * GB, int(1.5 * GB), int(0.1 * GB))])
    assert memory.available(CPU) == 2 * GB - int(1.4 * GB)  # limit minus usage, page cache not counted


def test_a_2_gb_container_on_a_large_host_tiles_a_1080p_pass(tmp_path, monkeypatch):
    fake_cgroup(tmp_path, monkeypatch, "v2", [("job", 2 * GB, int(1.2 * GB), 0)])
    room = memory.default_budget(CPU) - memory.in_use(CPU)
    assert room <= int(0.4 * GB) + 1  # half of the 0.8 GB left under the limit
    assert memory.tile_for(1080, 1920, 1, 4, room, halo=40) is not None


def test_the_tightest_limit_on_the_way_up_counts(tmp_path, monkeypatch):
    fake_cgroup(tmp_path, monkeypatch, "v2", [("user.slice", 3 * GB, int(2.5 * GB), 0), ("job", "max", GB, 0)])
    assert memory.available(CPU) == int(0.5 * GB)
    assert memory.cgroup_room() == (3 * GB, int(0.5 * GB))


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_no_limit_leaves_the_machines_memory(tmp_path, monkeypatch, version):
    fake_cgroup(tmp_path, monkeypatch, version, [("job", "max", GB, 0)])
    assert memory.cgroup_room() is None
    assert memory.available(CPU) > 0


def test_info_shows_the_container_limit(tmp_path, monkeypatch, weights_home):
    fake_cgroup(tmp_path, monkeypatch, "v2", [("job", 2 * GB, GB, 0)])
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0 and "(container limit 2.00 GB)" in result.stdout
