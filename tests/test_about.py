"""`adain info` names the CPU and the bf16 instructions it has (AMX, AVX-512 BF16): bf16 figures
depend on them, and machines differ."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adain_cli import about, device
from adain_cli.cli import app

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
ZEN3 = """processor\t: 0
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse2 avx2 fma
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def write(text: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(about, "CPUINFO", path)
    return write


def test_the_bf16_instruction_sets_are_read_from_the_cpu_flags(cpuinfo, tmp_path, monkeypatch):
    cpuinfo(SAPPHIRE_RAPIDS)
    assert about.cpu_bf16_features() == ["AMX", "AVX-512 BF16"]
    assert about.cpu_model() == "Intel(R) Xeon(R) Platinum 8480+"
    cpuinfo(ZEN3)
    assert about.cpu_bf16_features() == []
    monkeypatch.setattr(about, "CPUINFO", tmp_path / "absent")  # macOS, Windows: no /proc
    assert about.cpu_bf16_features() == [] and about.cpu_model()


@pytest.mark.parametrize(("text", "fast", "line"), [
    (SAPPHIRE_RAPIDS, True, "cpu bf16: yes, AMX and AVX-512 BF16 (--precision bf16 on cpu)"),
    (SAPPHIRE_RAPIDS, False, "cpu bf16: no: the CPU has AMX and AVX-512 BF16, but this torch's oneDNN does not use it"),
    (ZEN3, False, "cpu bf16: no (neither AMX nor AVX-512 BF16)"),
])
def test_info_says_which_bf16_instructions_the_cpu_has(cpuinfo, monkeypatch, weights_home, text, fast, line):
    cpuinfo(text)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast)
    plain = CliRunner().invoke(app, ["info"])
    assert plain.exit_code == 0, plain.output
    assert line in plain.stdout.splitlines()
    assert f"cpu: {about.cpu_model()}, " in plain.stdout
    facts = json.loads(CliRunner().invoke(app, ["info", "--json"]).stdout)
    assert facts["cpu_bf16"] is fast and facts["cpu_bf16_features"] == about.cpu_bf16_features()
