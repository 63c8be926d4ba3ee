"""`adain download-weights`, `adain info` and first-use downloads, against a real HTTP server
on 127.0.0.1 serving random weights in the public layout, with faults injected."""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import PUBLIC_DECODER_CONVS, random_state_dict
from typer.testing import CliRunner
from weight_server import WeightServer

from adain_cli import install, weights
from adain_cli.cli import app

NAMES = ("vgg_normalised.pth", "decoder.pth")


def saved(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(good_files, monkeypatch, tmp_path):
    srv = WeightServer(good_files)
    monkeypatch.setenv("ADAIN_WEIGHTS_URL", srv.url)
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ADAIN_OFFLINE")
    yield srv
    srv.close()


def adain(*args):
    return CliRunner().invoke(app, ["download-weights", "--retries", "2", "--timeout", "2", *map(str, args)])


def installed_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "weights"


def one_error_line(result, *fragments: str) -> None:
    """Exactly one error line (besides "fetching NAME ..." progress lines), with the fragments."""
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("fetching ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("adain: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def nothing_installed(tmp_path: Path, name: str = "decoder.pth") -> bool:
    folder = installed_dir(tmp_path)
    return not (folder / name).exists()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Retries wait 10 ms instead of seconds."""
    monkeypatch.setattr("adain_cli.cli.download.RetryPolicy",
                        lambda attempts, timeout: install.RetryPolicy(attempts, 0.01, timeout))


# --- the manifest ------------------------------------------------------------------------

def test_the_installed_package_carries_the_repositorys_manifest():
    from importlib import resources

    repo_manifest = (Path(__file__).resolve().parents[1] / "weights" / "manifest.json").read_bytes()
    assert resources.files("adain_cli").joinpath("manifest.json").read_bytes() == repo_manifest


def test_the_manifest_names_the_public_release_and_invents_no_checksums():
    specs = weights.manifest()
    assert [s.name for s in specs] == list(NAMES)
    for spec in specs:
        assert spec.url == f"https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/{spec.name}"
        assert spec.sha256 is None or len(spec.sha256) == 64
        assert spec.source and spec.licence


# --- installing --------------------------------------------------------------------------

def test_download_installs_verifies_and_records(server, tmp_path, good_files):
    result = adain()
    assert result.exit_code == 0, result.stderr
    folder = installed_dir(tmp_path)
    record = json.loads((folder / "installed.json").read_text())
    for name in NAMES:
        assert (folder / name).read_bytes() == good_files[name]
        assert record[name]["sha256"] == install.sha256_of(folder / name)
        assert record[name]["sha256"] in result.stdout
    assert not list(folder.glob("*.part")) and not list(folder.glob(".*.part"))


def test_good_weights_present_are_kept(server, tmp_path):
    assert adain().exit_code == 0
    before = len(server.requests)
    result = adain()
    assert result.exit_code == 0 and result.stdout.count("already installed") == 2
    assert len(server.requests) == before


def test_force_downloads_again(server):
    assert adain().exit_code == 0
    before = len(server.requests)
    assert adain("--force").exit_code == 0
    assert len(server.requests) == before + 2


def test_a_bad_download_never_replaces_good_weights(server, tmp_path, good_files):
    assert adain().exit_code == 0
    server.files["decoder.pth"] = saved({"1.weight": torch.zeros(2)})
    result = adain("--force")
    assert result.exit_code == 3
    assert (installed_dir(tmp_path) / "decoder.pth").read_bytes() == good_files["decoder.pth"]


def test_dest_installs_elsewhere(server, tmp_path):
    assert adain("--dest", tmp_path / "elsewhere").exit_code == 0
    assert all((tmp_path / "elsewhere" / name).exists() for name in NAMES)


def test_json_reports_each_file(server):
    result = adain("--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in records] == list(NAMES) and {r["status"] for r in records} == {"installed"}


# --- network faults -----------------------------------------------------------------------

def test_404_fails_at_once_and_names_the_url(server, tmp_path):
    server.faults["decoder.pth"] = ["404"]
    result = adain()
    assert result.exit_code == 4
    one_error_line(result, f"{server.url}/decoder.pth", "HTTP 404")
    assert [n for n, _ in server.requests].count("decoder.pth") == 1
    assert nothing_installed(tmp_path)


def test_500_then_success_is_retried(server, tmp_path):
    server.faults["decoder.pth"] = ["500"]
    assert adain().exit_code == 0
    assert [n for n, _ in server.requests].count("decoder.pth") == 2


def test_5xx_every_time_gives_up(server, tmp_path):
    server.faults["decoder.pth"] = ["500"] * 3
    result = adain()
    assert result.exit_code == 4
    one_error_line(result, "HTTP 500", "after 3 attempts")
    assert nothing_installed(tmp_path)


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path, good_files):
    server.faults["decoder.pth"] = [("drop", 100_000)]
    result = adain()
    assert result.exit_code == 0, result.stderr
    ranges = [r for n, r in server.requests if n == "decoder.pth"]
    assert ranges == [None, "bytes=100000-"]
    assert (installed_dir(tmp_path) / "decoder.pth").read_bytes() == good_files["decoder.pth"]


def test_an_interrupted_run_resumes_in_the_next_run(server, tmp_path, good_files):
    server.faults["decoder.pth"] = [("drop", 50_000)] * 3
    assert adain().exit_code == 4
    assert nothing_installed(tmp_path)
    assert (installed_dir(tmp_path) / ".decoder.pth.part").stat().st_size == 150_000
    assert adain().exit_code == 0
    assert [r for n, r in server.requests if n == "decoder.pth"][-1] == "bytes=150000-"
    assert (installed_dir(tmp_path) / "decoder.pth").read_bytes() == good_files["decoder.pth"]


def test_a_server_slower_than_the_timeout(server, tmp_path):
    server.faults["decoder.pth"] = [("slow", 3)] * 3
    started = time.monotonic()
    result = CliRunner().invoke(app, ["download-weights", "--retries", "1", "--timeout", "0.5"])
    assert result.exit_code == 4
    one_error_line(result, "decoder.pth", "timed out")
    assert time.monotonic() - started < 6
    assert nothing_installed(tmp_path)


def test_connection_refused(server, monkeypatch, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ADAIN_WEIGHTS_URL", f"http://127.0.0.1:{port}")
    result = adain()
    assert result.exit_code == 4
    one_error_line(result, f"127.0.0.1:{port}", "connection refused")


def test_dns_failure(server, monkeypatch, tmp_path):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    result = adain()
    assert result.exit_code == 4
    one_error_line(result, "host name lookup failed (DNS)")


# --- bad files ----------------------------------------------------------------------------

def test_a_truncated_file_fails_verification(server, tmp_path, good_files):
    server.files["decoder.pth"] = good_files["decoder.pth"][: len(good_files["decoder.pth"]) // 2]
    result = adain()
    assert result.exit_code == 3
    one_error_line(result, "decoder.pth", "failed verification, nothing installed")
    assert nothing_installed(tmp_path) and not (installed_dir(tmp_path) / ".decoder.pth.part").exists()


def test_wrong_shapes_fail_verification_naming_the_key(server, tmp_path):
    state = random_state_dict(PUBLIC_DECODER_CONVS, seed=0)
    state["28.weight"] = torch.zeros(3, 64, 1, 1)
    server.files["decoder.pth"] = saved(state)
    result = adain()
    assert result.exit_code == 3
    one_error_line(result, "failed verification", "28.weight is (3, 64, 1, 1)")
    assert nothing_installed(tmp_path)


def test_float16_weights_are_refused_at_install(server, tmp_path):
    state = {k: v.half() for k, v in random_state_dict(PUBLIC_DECODER_CONVS, seed=0).items()}
    server.files["decoder.pth"] = saved(state)
    result = adain()
    assert result.exit_code == 3
    one_error_line(result, "torch.float32 expected")


class _Touch:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(server, tmp_path):
    marker = tmp_path / "code-ran"
    server.files["decoder.pth"] = pickle.dumps({"1.weight": _Touch(str(marker))})
    result = adain()
    assert result.exit_code == 3
    one_error_line(result, "not a loadable weights file")
    assert not marker.exists() and nothing_installed(tmp_path)


def test_a_pinned_sha256_must_match(server, tmp_path, monkeypatch):
    pinned = tuple(s if s.name != "decoder.pth" else weights.WeightSpec(**{**s.__dict__, "sha256": "0" * 64})
                   for s in weights.manifest())
    monkeypatch.setattr("adain_cli.install.manifest", lambda: pinned)
    result = adain()
    assert result.exit_code == 3
    one_error_line(result, "does not match the pinned 0000")
    assert nothing_installed(tmp_path)


# --- local files, storage -----------------------------------------------------------------

def test_from_dir_installs_without_network(server, tmp_path, good_files):
    source = tmp_path / "usb"
    source.mkdir()
    for name, data in good_files.items():
        (source / name).write_bytes(data)
    result = adain("--from", source)
    assert result.exit_code == 0, result.stderr
    assert server.requests == []
    assert (installed_dir(tmp_path) / "decoder.pth").read_bytes() == good_files["decoder.pth"]


def test_from_dir_with_a_bad_file_installs_nothing_over_good_weights(server, tmp_path, good_files):
    assert adain().exit_code == 0
    source = tmp_path / "usb"
    source.mkdir()
    (source / "vgg_normalised.pth").write_bytes(good_files["vgg_normalised.pth"])
    (source / "decoder.pth").write_bytes(b"garbage")
    result = adain("--from", source, "--force")
    assert result.exit_code == 3
    one_error_line(result, f"{source / 'decoder.pth'}", "failed verification")
    assert (installed_dir(tmp_path) / "decoder.pth").read_bytes() == good_files["decoder.pth"]


def test_disk_full_while_downloading(server, tmp_path, monkeypatch):
    real_open = open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullFile(handle) if str(path).endswith(".part") else handle

    monkeypatch.setattr("builtins.open", opener)
    result = adain()
    assert result.exit_code == 5
    one_error_line(result, ".part", "No space left on device")
    monkeypatch.undo()
    assert nothing_installed(tmp_path, "vgg_normalised.pth")


def test_permission_denied_moving_into_place(server, tmp_path, monkeypatch):
    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("adain_cli.install.os.replace", denied)
    result = adain()
    assert result.exit_code == 5
    one_error_line(result, "vgg_normalised.pth", "Permission denied")
    monkeypatch.undo()
    assert nothing_installed(tmp_path, "vgg_normalised.pth")
    assert not list(installed_dir(tmp_path).glob(".*.part"))


def test_two_downloads_into_one_directory_at_once(server, tmp_path, good_files):
    env = {**os.environ, "ADAIN_WEIGHTS_URL": server.url, "ADAIN_HOME": str(tmp_path / "home")}
    env.pop("ADAIN_OFFLINE", None)
    command = [sys.executable, "-m", "adain_cli", "download-weights", "--retries", "1"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    for name in NAMES:
        assert (installed_dir(tmp_path) / name).read_bytes() == good_files[name]
    assert CliRunner().invoke(app, ["download-weights", "--verify"]).exit_code == 0


# --- verify -------------------------------------------------------------------------------

def test_verify_passes_on_installed_weights(server):
    assert adain().exit_code == 0
    result = adain("--verify")
    assert result.exit_code == 0 and result.stdout.count("verified") == 2


def test_verify_catches_a_flipped_byte(server, tmp_path):
    assert adain().exit_code == 0
    path = installed_dir(tmp_path) / "decoder.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = adain("--verify")
    assert result.exit_code == 3
    one_error_line(result, "decoder.pth", "differs from", "the file has changed")


def test_verify_reports_missing_files(server, tmp_path):
    result = adain("--verify")
    assert result.exit_code == 3 and "missing" in result.stderr


def test_damaged_weights_are_replaced_by_a_fresh_download(server, tmp_path, good_files):
    assert adain().exit_code == 0
    (installed_dir(tmp_path) / "decoder.pth").write_bytes(b"damaged")
    assert adain().exit_code == 0
    assert (installed_dir(tmp_path) / "decoder.pth").read_bytes() == good_files["decoder.pth"]


# --- first use and info -------------------------------------------------------------------

def test_stylize_downloads_missing_weights_on_first_use_keeping_stdout_clean(server, tmp_path):
    from conftest import synthetic_image

    synthetic_image(40, 32).save(tmp_path / "c.png")
    synthetic_image(32, 32).save(tmp_path / "s.png")
    result = CliRunner().invoke(app, ["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"),
                                      "-o", str(tmp_path / "o.png"), "--json", "--content-size", "0"])
    assert result.exit_code == 0, result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["status"] == "written"
    assert "fetching decoder.pth" in result.stderr
    assert all((installed_dir(tmp_path) / name).exists() for name in NAMES)


def test_info_reports_versions_device_and_weights(server, tmp_path):
    assert adain().exit_code == 0
    result = CliRunner().invoke(app, ["info", "--json"])
    facts = json.loads(result.stdout)
    assert facts["torch"] == torch.__version__ and facts["device"] in ("cpu", "cuda", "mps")
    assert facts["device_reason"]
    assert facts["weights_dir"] == str(installed_dir(tmp_path))
    assert all(facts["weights"][name]["ok"] for name in NAMES)
    plain = CliRunner().invoke(app, ["info"])
    assert plain.exit_code == 0 and "device:" in plain.stdout and "decoder.pth: verified" in plain.stdout
