"""`adain info`: what `about.facts()` gathers, as lines or as JSON."""

from __future__ import annotations

import json
from typing import Any

import typer

from .. import about, install, memory
from . import _options as opt


def info(as_json: opt.Json = False) -> None:
    """Versions, the device that would be used and why, and the state of the weights."""
    facts = about.facts()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    for line in _lines(facts):
        typer.echo(line)


def _lines(facts: dict[str, Any]) -> list[str]:
    lines = [f"adain-cli {facts['adain_cli']} (python {facts['python']}, {facts['platform']})",
             f"torch {facts['torch']}, torchvision {facts['torchvision']}",
             f"device: {facts['device']} ({facts['device_reason']})"]
    if facts["gpu_problem"]:
        lines.append(f"gpu: {facts['gpu_problem']}")
    lines.append(f"cpu: {facts['cpu']}, {facts['cpu_cores']} cores")
    lines.append(f"cpu bf16: {_bf16(facts['cpu_bf16'], facts['cpu_bf16_features'])}")
    budget = f"memory budget (--max-memory auto): {memory.format_size(facts['memory_budget'])}"
    limit = facts["memory_limit"]
    lines.append(budget + (f" (container limit {memory.format_size(limit)})" if limit else ""))
    lines.append(f"weights: {facts['weights_dir']} (from the {facts['weights_dir_from']})")
    for name, check in facts["weights"].items():
        lines.append(f"  {name}: {check['detail']}" + (f" (sha256 {check['sha256']})" if check["ok"] else ""))
    if facts["mirror"]:
        lines.append(f"mirror: {facts['mirror']} ({install.URL_ENV})")
    if facts["offline"]:
        lines.append(f"offline: yes ({install.OFFLINE_ENV})")
    return lines


def _bf16(fast: bool, features: list[str]) -> str:
    """Whether bf16 runs natively here, and on which instructions: what a benchmark's bf16 figure depends on."""
    which = " and ".join(features)
    if fast:
        return f"yes, {which} (--precision bf16 on cpu)" if which else "yes (--precision bf16 on cpu)"
    if which:
        return f"no: the CPU has {which}, but this torch's oneDNN does not use it"
    return "no (neither AMX nor AVX-512 BF16)"
