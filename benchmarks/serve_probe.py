"""`adain serve` probed as a hostile page and a careless client would (issue 19): no 500, no traceback.

Starts its own server (CPU, random weights in an ADAIN_HOME of its own, 127.0.0.1, a free port)
with a small --styles folder (a file name that is not UTF-8, a painting deleted once the server
runs, a broken link), a --save folder removed once it runs, RLIMIT_NOFILE 128, --max-memory 2G
(admitted work is bounded by half: 1 GB), short header and body timeouts, and --debug (the
access log, which uvicorn writes to stdout: the server's "log" below is its stdout and stderr);
a second, short-lived server with --token. Then, one row each:

- a foreign Host (and a rebound name with the right port) refused with 421, a foreign Origin's
  POST with 403, the server's own Origin served, no CORS headers;
- the heavy request of the issue (a content and 8 styles, each a ~20 KB 4000x4000 PNG, sizes 0)
  4 at once, and a lighter one that is decoded (a content and 2 such styles at 512 px: two fit
  in the bound at once) 4 at once: every answer 200, 503 with Retry-After, or 413; the server's
  peak RSS over its idle RSS (VmHWM, reset before each probe) within the bound /v1/info states;
- style_name 990 times (400 at once, RSS flat), too many styles, fields or files;
- 150 idle sockets, opened one by one and in one burst: /v1/health still answers (timed), the
  log stays small; a slow-header client closed after --header-timeout; a slow body answered 408;
- bad sizes, bad files (corrupt DDS, ICO, TGA, PCX, SGI, truncated PNG, empty, text), weights
  1e308,1e308; the library (a deleted painting 404, the non-UTF-8 name listed and its
  thumbnail served); --save removed (200 with X-Save-Error); ?token= redacted in the log;
- at the end the whole log has no traceback and no 500, and SIGTERM stops the server (exit 0).

    python benchmarks/serve_probe.py [--json probe.json]
    python benchmarks/serve_probe.py --url http://127.0.0.1:8000 [--token T] [--header-timeout 10] [--body-timeout 60]

With --url the probes run against a server already running, except those that need control of
it (its library and --save folder, its memory and log, the token server), and a heavy request
its memory bound would admit (on a CPU it would run for many minutes); the table says which
were skipped. Exits 1 if any probe fails.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import http.client
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from PIL import Image

NOFILE = 128  # the server's open-file limit: the 150 idle sockets exceed it
MAX_MEMORY = "2G"  # admitted work may hold half of it
HEADER_TIMEOUT, BODY_TIMEOUT = 2.0, 3.0  # short, so that the run is short
IDLE_SOCKETS = 150
HEAVY_SIDE = 4000
SMALL = {"content_size": "64", "style_size": "64"}  # the ordinary requests: quick on two cores
SECRET = "probe-\u00e9-" + uuid.uuid4().hex  # the token server's (not ASCII): must never reach its log


# --- the server --------------------------------------------------------------------------------

@dataclass
class Server:
    """A server to probe: where it listens, and (when this script started it) its process and log."""

    host: str
    port: int
    token: str | None = None
    process: subprocess.Popen | None = None
    log: Path | None = None
    folders: dict[str, Path] = field(default_factory=dict)

    @property
    def own(self) -> bool:
        return self.process is not None

    def output(self) -> bytes:
        return self.log.read_bytes() if self.log is not None else b""

    def status(self, key: str) -> int:
        """A /proc/PID/status figure in bytes (VmRSS, VmHWM)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def reset_peak(self) -> bool:
        """VmHWM back to VmRSS (Linux 4.0 and later); False where that is not allowed."""
        assert self.process is not None
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 90) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def start_server(root: Path, *extra: str, nofile: int | None = None) -> Server:
    """`adain serve` on 127.0.0.1 and a free port, with random weights in ADAIN_HOME=root/home."""
    from common import random_weights  # torch, only when this script runs the server

    home = root / "home"
    if not (home / "weights" / "decoder.pth").exists():
        (home / "weights").mkdir(parents=True, exist_ok=True)
        random_weights(home / "weights")
    log = root / f"server-{uuid.uuid4().hex[:6]}.log"  # stdout (uvicorn's access log) and stderr

    def limit_files() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    env = {**os.environ, "ADAIN_HOME": str(home)}
    env.pop("ADAIN_TOKEN", None)
    with log.open("wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "adain_cli", "serve", "--host", "127.0.0.1", "--port", "0",
                                    "--device", "cpu", "--offline", *extra], stdin=subprocess.DEVNULL,
                                   stdout=handle, stderr=handle, env=env, preexec_fn=limit_files)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(rb"adain serve: http://127\.0\.0\.1:(\d+) on ", log.read_bytes())
        if found:
            return Server("127.0.0.1", int(found[1]), process=process, log=log)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")


# --- requests ------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def is_json_error(self) -> bool:
        return self.json().get("status") == self.status and isinstance(self.json().get("error"), str)


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body (fields, then files as (field, file name, bytes)) and its Content-Type."""
    boundary = "probe" + uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + value.encode() + b"\r\n")
    for name, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def call(server: Server, method: str, path: str, body: bytes | None = None, headers: dict[str, Any] | None = None,
         timeout: float = 120, auth: bool = True) -> Reply:
    """One request on a new connection; a Host header given in `headers` replaces the right one (a
    header given as bytes is sent as they are, a str as latin-1)."""
    headers = dict(headers or {})
    headers.setdefault("Host", f"{server.host}:{server.port}")
    if auth and server.token is not None:
        headers.setdefault("Authorization", f"Bearer {server.token}")
    connection = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    began = time.perf_counter()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data,
                     time.perf_counter() - began)
    finally:
        connection.close()


def stylize(server: Server, fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]],
            headers: dict[str, str] | None = None, timeout: float = 300) -> Reply:
    body, content_type = multipart(fields, files)
    return call(server, "POST", "/v1/stylize", body, {"Content-Type": content_type, **(headers or {})}, timeout)


# --- synthetic images ----------------------------------------------------------------------------

def encoded(image: Image.Image, pillow_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, pillow_format, **options)
    return buffer.getvalue()


def noise(side: int, seed: int) -> bytes:
    image = Image.effect_noise((side, side), 40 + seed * 7).convert("RGB")
    return encoded(Image.merge("RGB", [image.getchannel(0).rotate(90 * seed), image.getchannel(1),
                                       Image.linear_gradient("L").resize((side, side))]), "PNG")


def heavy_png(shade: int) -> bytes:
    """A 4000x4000 PNG of one grey: ~20 KB that decode to 16 million pixels."""
    return encoded(Image.new("L", (HEAVY_SIDE, HEAVY_SIDE), shade), "PNG", compress_level=9)


def corrupt_dds() -> bytes:
    """The issue's file: a DDS header whose pixel format flags (26) Pillow's DDS decoder does not know."""
    header = struct.pack("<7I", 124, 0x1007, 64, 64, 0, 0, 0) + bytes(44)
    header += struct.pack("<2I4s5I", 32, 26, bytes(4), 32, 0, 0, 0, 0) + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return b"DDS " + header + bytes(64 * 64 * 4)


# --- the probes ----------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    got: str
    expected: str
    ok: bool | None  # None: skipped


class Probe:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.figures: dict[str, Any] = {}
        print(f"{'probe':<54} {'got':<40} {'expected':<30} result", flush=True)

    def row(self, name: str, got: str, expected: str, ok: bool | None) -> None:
        self.rows.append(Row(name, got, expected, ok))
        verdict = "skip" if ok is None else "pass" if ok else "FAIL"
        print(f"{name:<54} {got:<40} {expected:<30} {verdict}", flush=True)

    def skip(self, name: str, why: str) -> None:
        self.row(name, "-", why, None)

    @contextlib.contextmanager
    def guarded(self, name: str) -> Iterator[None]:
        """A probe that raised (a connection reset, a timeout) is a failed row, and the run goes on."""
        try:
            yield
        except Exception as exc:  # any failure of the client is the probe's failure
            self.row(name, f"{type(exc).__name__}: {exc}"[:40], "an answer", False)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]


def statuses(replies: list[Reply]) -> str:
    counts: dict[int, int] = {}
    for reply in replies:
        counts[reply.status] = counts.get(reply.status, 0) + 1
    return " ".join(f"{status}x{n}" if n > 1 else str(status) for status, n in sorted(counts.items()))


def hosts_and_origins(probe: Probe, server: Server, content: bytes, style: bytes) -> None:
    port = server.port
    for method, path in (("GET", "/v1/info"), ("POST", "/v1/stylize")):
        for host in ("evil.example", "evil.example:8000", f"evil.example:{port}"):
            name = f"{method} {path} Host: {host.replace(str(port), 'PORT')}"
            with probe.guarded(name):
                reply = call(server, method, path, b"" if method == "POST" else None, {"Host": host})
                probe.row(name, str(reply.status), "421 JSON", reply.status == 421 and reply.is_json_error())
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        name = f"GET /v1/info Host: {host.replace(str(port), 'PORT')}"
        with probe.guarded(name):
            reply = call(server, "GET", "/v1/info", headers={"Host": host})
            probe.row(name, str(reply.status), "200", reply.status == 200)
    files = [("content", "c.png", content), ("style", "s.png", style)]
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null"):
        name = f"POST /v1/stylize Origin: {origin.replace(str(port), 'PORT')}"
        with probe.guarded(name):
            reply = stylize(server, list(SMALL.items()), files, {"Origin": origin})
            probe.row(name, str(reply.status), "403 JSON", reply.status == 403 and reply.is_json_error())
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        name = f"POST /v1/stylize own Origin http://{host.replace(str(port), 'PORT')}"
        with probe.guarded(name):
            reply = stylize(server, list(SMALL.items()), files, {"Origin": f"http://{host}", "Host": host})
            probe.row(name, f"{reply.status} {reply.headers.get('content-type', '')}", "200 image/png",
                      reply.status == 200 and reply.headers.get("content-type") == "image/png")
    name = "no CORS headers for a foreign Origin (GET, OPTIONS)"
    with probe.guarded(name):
        got = call(server, "GET", "/v1/info", headers={"Origin": "http://evil.example"})
        preflight = call(server, "OPTIONS", "/v1/stylize", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        cors = [k for r in (got, preflight) for k in r.headers if k.startswith("access-control-")]
        probe.row(name, f"{got.status}, {preflight.status}; {', '.join(cors) or 'no CORS'}",
                  "no access-control-*", not cors and preflight.status != 500)


def sample_peak(server: Server, work: Callable[[], Any]) -> tuple[Any, int, int]:
    """`work()`'s result, the server's RSS before it and its peak RSS during it (VmHWM, reset first;
    VmRSS sampled every 10 ms where the peak cannot be reset)."""
    before = server.status("VmRSS")
    reset = server.reset_peak()
    samples = [before]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(work)
        while not future.done():
            with contextlib.suppress(OSError, KeyError):
                samples.append(server.status("VmRSS"))
            time.sleep(0.01)
        result = future.result()
    peak = max(samples + ([server.status("VmHWM")] if reset else []))
    return result, before, peak


def concurrently(count: int, send: Callable[[], Reply]) -> list[Reply]:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: send(), range(count)))


def heavy(probe: Probe, server: Server) -> None:
    info = call(server, "GET", "/v1/info").json()
    bound = int(info.get("limits", {}).get("memory_bytes", 0))
    probe.figures["memory_bound_bytes"] = bound
    pictures = [heavy_png(20 + 20 * i) for i in range(9)]
    probe.figures["heavy_png_bytes"] = len(pictures[0])

    def heavy_request(count: int, sizes: dict[str, str]) -> Callable[[], Reply]:
        files = [("content", "c.png", pictures[0])] + [("style", f"s{i}.png", pictures[i]) for i in range(1, count)]
        return lambda: stylize(server, list(sizes.items()), files)

    def acceptable(reply: Reply) -> bool:
        return reply.status in (200, 413) or (reply.status == 503 and "retry-after" in reply.headers)

    cases = [("heavy: content + 8 styles 4000^2, sizes 0, 4 at once", 9, {"content_size": "0", "style_size": "0"}),
             ("heavy: content + 2 styles 4000^2, at 512, 4 at once", 3, {"content_size": "512", "style_size": "512"})]
    if not server.own:
        probe.skip("peak RSS growth within the memory bound", "--url: no access to its memory")
    for name, count, sizes in cases:
        # What the server reserves for it (serve.py: 8 bytes a decoded pixel, 16 at the network's size).
        side = int(sizes["content_size"]) or HEAVY_SIDE
        need = count * (8 * HEAVY_SIDE**2 + 16 * side**2)
        if not server.own and need <= bound and side == HEAVY_SIDE:  # 16 MP images through the network
            probe.skip(name, f"fits its {bound / 1e9:.1f} GB: too slow")
            continue
        with probe.guarded(name):
            send = heavy_request(count, sizes)
            if server.own:
                replies, before, peak = sample_peak(server, lambda send=send: concurrently(4, send))
                growth = peak - before
                probe.figures.setdefault("peak_rss_growth_bytes", {})[name] = growth
                probe.figures["peak_rss_growth_max_bytes"] = max(growth, probe.figures.get(
                    "peak_rss_growth_max_bytes", 0))
                probe.figures.setdefault("idle_rss_bytes", before)
            else:
                replies = concurrently(4, send)
            bad = [r for r in replies if not acceptable(r)]
            probe.row(name, statuses(replies), "200/503+Retry-After/413", not bad)
            if bad:
                print(f"    {bad[0].status}: {bad[0].body[:200]!r}", flush=True)
            if server.own:
                probe.row("  peak RSS growth within the memory bound", f"{growth / 2**20:+.0f} MiB",
                          f"<= {bound / 2**20:.0f} MiB (--max-memory/2)", bound > 0 and growth <= bound)
    name = "memory_held back to 0 after the heavy requests"
    with probe.guarded(name):
        deadline, held = time.monotonic() + 5, -1
        while time.monotonic() < deadline:
            held = call(server, "GET", "/v1/info").json().get("memory_held", -1)
            if held == 0:
                break
            time.sleep(0.2)
        probe.row(name, f"{held} bytes", "0", held == 0)


def counts(probe: Probe, server: Server, content: bytes, style: bytes) -> None:
    files = [("content", "c.png", content), ("style", "s.png", style)]
    name = "style_name x990 (a 10 KB form)"
    with probe.guarded(name):
        fields = [*SMALL.items(), *[("style_name", "x" * 8) for _ in range(990)]]
        if server.own:
            reply, before, peak = sample_peak(server, lambda: stylize(server, fields, files[:1]))
            probe.figures["style_name_990_rss_growth_bytes"] = peak - before
            got = f"{reply.status} in {reply.seconds:.2f} s, RSS {(peak - before) / 2**20:+.0f} MiB"
            ok = reply.status == 400 and reply.seconds < 2 and peak - before < 64 * 2**20
        else:
            reply = stylize(server, fields, files[:1])
            got, ok = f"{reply.status} in {reply.seconds:.2f} s", reply.status == 400 and reply.seconds < 2
        probe.row(name, got, "400 < 2 s, RSS < +64 MiB", ok and reply.is_json_error())
    cases = [("9 styles (style_name x9)", [("style_name", f"n{i}") for i in range(9)], files[:1]),
             ("9 styles (style x5 + style_name x4)", [("style_name", f"n{i}") for i in range(4)],
              files[:1] + [("style", f"s{i}.png", style) for i in range(5)]),
             ("40 form fields", [(f"f{i}", "1") for i in range(40)], files),
             ("10 files", [], files[:1] + [("style", f"s{i}.png", style) for i in range(9)])]
    for name, fields, parts in cases:
        with probe.guarded(name):
            reply = stylize(server, [*SMALL.items(), *fields], parts)
            probe.row(name, str(reply.status), "400 JSON", reply.status == 400 and reply.is_json_error())


def health_row(probe: Probe, server: Server, name: str, figure: str) -> None:
    """GET /v1/health, timed: the row `name`, and the figure."""
    reply = call(server, "GET", "/v1/health", timeout=10)
    probe.figures[figure] = round(reply.seconds, 4)
    probe.row(name, f"{reply.status} in {reply.seconds * 1000:.0f} ms", "200 < 1 s",
              reply.status == 200 and reply.seconds < 1)


def log_growth_row(probe: Probe, server: Server, log_before: int, figure: str) -> None:
    """How much the server's output grew since `log_before`: a row, and the figure."""
    time.sleep(0.5)
    grown = len(server.output()) - log_before
    probe.figures[figure] = grown
    probe.row("  log written meanwhile", f"{grown} bytes", "< 16 KB", grown < 16 * 1024)


def connections(probe: Probe, server: Server, header_timeout: float, body_timeout: float) -> None:
    name = f"GET /v1/health with {IDLE_SOCKETS} idle sockets open"
    log_before = len(server.output())
    with probe.guarded(name):
        idle = []
        try:
            for _ in range(IDLE_SOCKETS):
                idle.append(socket.create_connection((server.host, server.port), timeout=5))
            time.sleep(0.2)
            health_row(probe, server, name, "health_seconds_under_idle_sockets")
        finally:
            for sock in idle:
                sock.close()
    if server.own:
        log_growth_row(probe, server, log_before, "log_bytes_idle_probe")
    else:
        probe.skip("  log written meanwhile", "--url: no access to its log")

    # The same sockets all at once: they wait in the listen backlog while the server is stopped
    # (SIGSTOP), so that it accepts a burst of them in one go when it goes on.
    name = f"{IDLE_SOCKETS} sockets in one burst, then /v1/health"
    if not server.own:
        probe.skip(name, "--url: needs control of the server")
    else:
        log_before = len(server.output())
        with probe.guarded(name):
            burst = []
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                for _ in range(IDLE_SOCKETS):
                    sock = socket.socket()
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        sock.connect((server.host, server.port))
                    burst.append(sock)
                time.sleep(0.3)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            try:
                time.sleep(0.2)
                health_row(probe, server, name, "health_seconds_after_burst")
            finally:
                for sock in burst:
                    sock.close()
        log_growth_row(probe, server, log_before, "log_bytes_burst_probe")

    name = f"slow header (a line every 0.5 s), --header-timeout {header_timeout:g}"
    with probe.guarded(name):
        with socket.create_connection((server.host, server.port), timeout=header_timeout + 10) as sock:
            began = time.perf_counter()
            sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n".encode())
            sock.settimeout(0.5)
            answer, closed = b"", None
            while closed is None and time.perf_counter() - began < header_timeout + 10:
                try:
                    data = sock.recv(65536)
                    if not data:
                        closed = time.perf_counter() - began
                    answer += data
                except TimeoutError:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed = time.perf_counter() - began
        ok = closed is not None and header_timeout - 0.5 <= closed <= header_timeout + 2 and not answer.strip()
        probe.row(name, "open" if closed is None else f"closed after {closed:.1f} s" + (" + bytes" if answer else ""),
                  f"closed after ~{header_timeout:g} s", ok)

    name = f"slow body (100 of 100000 bytes), --body-timeout {body_timeout:g}"
    with probe.guarded(name):
        with socket.create_connection((server.host, server.port), timeout=body_timeout + 10) as sock:
            began = time.perf_counter()
            auth = f"Authorization: Bearer {server.token}\r\n" if server.token else ""
            sock.sendall(f"POST /v1/stylize HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n{auth}Content-Type: "
                         "multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n".encode() + b"-" * 100)
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answer += chunk
            seconds = time.perf_counter() - began
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "no answer"
        probe.row(name, f"{status} after {seconds:.1f} s", f"408 after ~{body_timeout:g} s",
                  status == "408" and body_timeout - 0.5 <= seconds <= body_timeout + 3)


def bad_input(probe: Probe, server: Server, content: bytes, style: bytes) -> None:
    files = [("content", "c.png", content), ("style", "s.png", style)]
    sizes = [("content_size", "1" + "0" * 309, "413"), ("style_size", "1" + "0" * 309, "413"),
             ("content_size", "9" * 5000, "400/413"), ("content_size", "-1", "400"), ("content_size", "8", "400"),
             ("content_size", "1e309", "400"), ("style_size", "nan", "400")]
    for key, value, expected in sizes:
        shown = value if len(value) < 8 else f"{value[0]}{value[1]}...({len(value)} digits)"
        name = f"{key}={shown}"
        with probe.guarded(name):
            other = "style_size" if key == "content_size" else "content_size"
            reply = stylize(server, [(key, value), (other, "64")], files)
            probe.row(name, str(reply.status), f"{expected} JSON",
                      str(reply.status) in expected.split("/") and reply.is_json_error())
    picture = Image.effect_noise((32, 32), 50).convert("RGB")
    png = encoded(picture, "PNG")
    unsupported = [("corrupt DDS (pixel format flags 26)", "x.dds", corrupt_dds()),
                   ("ICO", "x.ico", encoded(picture, "ICO")), ("TGA", "x.tga", encoded(picture, "TGA")),
                   ("PCX", "x.pcx", encoded(picture, "PCX")), ("SGI", "x.sgi", encoded(picture, "SGI")),
                   ("text file", "notes.txt", b"just some words\n" * 20)]
    for label, filename, data in unsupported:
        for role in ("content", "style"):
            name = f"{label} as {role}"
            with probe.guarded(name):
                parts = [("content", filename, data), files[1]] if role == "content" else \
                    [files[0], ("style", filename, data)]
                reply = stylize(server, list(SMALL.items()), parts)
                said = "not an image file in a supported format" in reply.json().get("error", "")
                probe.row(name, str(reply.status) + ("" if said else " (other message)"),
                          "415 'not a supported format'", reply.status == 415 and said)
    broken = [("truncated PNG", png[:len(png) // 2]), ("zero bytes", b""), ("PNG signature only", png[:8])]
    for label, data in broken:
        name = f"{label} as content"
        with probe.guarded(name):
            reply = stylize(server, list(SMALL.items()), [("content", "c.png", data), files[1]])
            probe.row(name, str(reply.status), "400/415 JSON", reply.status in (400, 415) and reply.is_json_error())
    for weights in ("1e308,1e308", "1,inf", "0,0", "nan,1", "1,2,3"):
        name = f"weights={weights} (2 styles)"
        with probe.guarded(name):
            reply = stylize(server, [*SMALL.items(), ("weights", weights)], [*files, ("style", "t.png", content)])
            probe.row(name, str(reply.status), "400 JSON", reply.status == 400 and reply.is_json_error())
    for alpha in ("nan", "1e309", "2"):
        name = f"alpha={alpha}"
        with probe.guarded(name):
            reply = stylize(server, [*SMALL.items(), ("alpha", alpha)], files)
            probe.row(name, str(reply.status), "400 JSON", reply.status == 400 and reply.is_json_error())


def library(probe: Probe, server: Server, content: bytes) -> None:
    if not server.own:
        for name in ("library: deleted painting, non-UTF-8 name", "--save folder removed", "token redaction"):
            probe.skip(name, "--url: needs control of the server")
        return
    folder = server.folders["styles"]
    name = "GET /v1/styles (non-UTF-8, 'a b#c?', broken link)"
    listed: dict[str, str] = {}
    with probe.guarded(name):
        reply = call(server, "GET", "/v1/styles")
        listed = {s["name"]: s["thumbnail"] for s in reply.json().get("styles", [])}
        want = {"caf\ufffd.png", "a b#c?.png", "gone.png", "ok.png"}
        probe.row(name, f"{reply.status}, {len(listed)} listed", "200, the 4 paintings",
                  reply.status == 200 and set(listed) == want)
    for painting in ("caf\ufffd.png", "a b#c?.png"):
        name = f"thumbnail of {painting!a} by its listed URL"
        with probe.guarded(name):
            reply = call(server, "GET", listed[painting])
            probe.row(name, f"{reply.status} {reply.headers.get('content-type', '')}", "200 image/jpeg",
                      reply.status == 200 and reply.headers.get("content-type") == "image/jpeg")
        name = f"style_name={painting!a}"
        with probe.guarded(name):
            reply = stylize(server, [*SMALL.items(), ("style_name", painting)], [("content", "c.png", content)])
            probe.row(name, str(reply.status), "200", reply.status == 200)
    missing = [("style_name=gone.png (deleted after start)",
                lambda: stylize(server, [*SMALL.items(), ("style_name", "gone.png")], [("content", "c.png", content)])),
               ("thumbnail of gone.png (deleted after start)", lambda: call(server, "GET", listed["gone.png"])),
               ("thumbnail ../../etc/passwd",
                lambda: call(server, "GET", "/v1/styles/..%2F..%2Fetc%2Fpasswd/thumbnail"))]
    for label, send in missing:
        with probe.guarded(label):
            reply = send()
            leaks = str(folder) in reply.body.decode("utf-8", "replace")
            probe.row(label, str(reply.status) + (" (names a path)" if leaks else ""), "404 JSON, no path",
                      reply.status == 404 and reply.is_json_error() and not leaks)
    name = "style_name=nothing-such.png"
    with probe.guarded(name):
        reply = stylize(server, [*SMALL.items(), ("style_name", "nothing-such.png")], [("content", "c.png", content)])
        probe.row(name, str(reply.status), "400 JSON", reply.status == 400 and reply.is_json_error())
    name = "--save folder removed while serving"
    with probe.guarded(name):
        reply = stylize(server, [*SMALL.items(), ("style_name", "ok.png")], [("content", "c.png", content)])
        header = reply.headers.get("x-save-error", "")
        probe.row(name, f"{reply.status}" + (" X-Save-Error" if header else ""), "200 + X-Save-Error",
                  reply.status == 200 and bool(header) and reply.body.startswith(b"\x89PNG"))


def tokens(probe: Probe, root: Path, started: concurrent.futures.Future[Server] | None) -> None:
    if started is None:
        return
    name = "token server: ?token=, bearer (any case), /docs"
    server = None
    with probe.guarded(name):
        server = started.result()
        quoted, utf8 = quote(SECRET, safe=""), SECRET.encode()
        got = [call(server, "GET", f"/?token={quoted}").status,
               call(server, "GET", f"/v1/info?token={quoted}&x=1").status,
               call(server, "GET", "/v1/info", headers={"Authorization": b"bearer " + utf8}).status,
               call(server, "GET", "/v1/info", headers={"Authorization": b"BEARER " + utf8}).status,
               call(server, "GET", f"/openapi.json?token={quoted}").status,
               call(server, "GET", f"/docs?token={quoted}").status,
               call(server, "GET", "/v1/info").status, call(server, "GET", "/v1/info?token=wrong").status,
               call(server, "GET", "/v1/info", headers={"Authorization": "Bearer wrong"}).status,
               call(server, "GET", "/v1/info", headers={"Authorization": f"Bearer {SECRET}"}).status]  # latin-1
        probe.row(name, " ".join(map(str, got)), "200 x6, then 401 x4", got == [200] * 6 + [401] * 4)
    if server is not None:
        code = server.stop()
        log = server.output()
        name = "token server log: the token never appears"
        seen = sum(log.count(form) for form in (SECRET.encode(), quote(SECRET, safe="").encode(),
                                                 SECRET.split("-")[-1].encode()))
        probe.row(name, f"{seen} times, exit {code}", "0 times ([redacted]), exit 0",
                  seen == 0 and b"[redacted]" in log and code == 0)
    name = "--token '' (usage error)"
    with probe.guarded(name):
        env = {**os.environ, "ADAIN_HOME": str(root / "home")}
        done = subprocess.run([sys.executable, "-m", "adain_cli", "serve", "--port", "0", "--token", ""],
                              capture_output=True, env=env, timeout=120)
        probe.row(name, f"exit {done.returncode}", "exit 2, one line",
                  done.returncode == 2 and b"Traceback" not in done.stderr)


def make_styles(folder: Path) -> None:
    folder.mkdir()
    for i, name in enumerate([b"ok.png", b"caf\xe9.png", b"a b#c?.png", b"gone.png"]):
        with open(os.path.join(os.fsencode(folder), name), "wb") as handle:
            handle.write(noise(96, i + 2))
    os.symlink(folder / "no-such-file.png", folder / "broken.png")


# --- the run ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def check_log(probe: Probe, server: Server) -> None:
    log = server.output()
    probe.figures["log_bytes"] = len(log)
    tracebacks = log.count(b"Traceback")
    errors = re.findall(rb'^.*" 500\b.*$', log, re.MULTILINE)
    probe.row("server log: no traceback", f"{tracebacks} tracebacks", "0", tracebacks == 0)
    probe.row("server log: no 500 status line", f"{len(errors)} lines", "0", not errors)
    for line in errors[:5]:
        print(f"    {line.decode(errors='replace')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="probe a server already running there (http://127.0.0.1:8000)")
    parser.add_argument("--token", help="with --url: the server's --token")
    parser.add_argument("--header-timeout", type=float, help="with --url: the server's --header-timeout (10)")
    parser.add_argument("--body-timeout", type=float, help="with --url: the server's --body-timeout (60)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures and rows here")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep the servers' output (stdout and stderr) here")
    args = parser.parse_args()

    began = time.perf_counter()
    content, style = noise(64, 0), noise(64, 1)
    with tempfile.TemporaryDirectory(prefix="serve-probe-") as temporary:
        root = Path(temporary)
        started: concurrent.futures.Future[Server] | None = None
        pool = concurrent.futures.ThreadPoolExecutor(1)
        if args.url:
            where = urlsplit(args.url)
            server = Server(where.hostname or "127.0.0.1", where.port or 80, token=args.token)
            header_timeout, body_timeout = args.header_timeout or 10.0, args.body_timeout or 60.0
        else:
            make_styles(root / "styles")
            (root / "save").mkdir()
            header_timeout, body_timeout = HEADER_TIMEOUT, BODY_TIMEOUT
            server = start_server(root, "--styles", str(root / "styles"), "--save", str(root / "save"),
                                  "--max-memory", MAX_MEMORY, "--header-timeout", str(header_timeout),
                                  "--body-timeout", str(body_timeout), "--debug", nofile=NOFILE)
            server.folders = {"styles": root / "styles", "save": root / "save"}
            started = pool.submit(start_server, root, "--token", SECRET, "--debug")
        probe = Probe()
        try:
            warm = stylize(server, list(SMALL.items()), [("content", "c.png", content), ("style", "s.png", style)])
            if warm.status != 200:
                raise SystemExit(f"a plain request failed: {warm.status} {warm.body[:300]!r}")
            if server.own:
                probe.row("--save folder present: X-Saved-As", "X-Saved-As" if "x-saved-as" in warm.headers else "-",
                          "X-Saved-As", "x-saved-as" in warm.headers)
                (root / "styles" / "gone.png").unlink()
                shutil.rmtree(root / "save")
            tokens(probe, root, started)
            hosts_and_origins(probe, server, content, style)
            counts(probe, server, content, style)
            heavy(probe, server)
            connections(probe, server, header_timeout, body_timeout)
            bad_input(probe, server, content, style)
            library(probe, server, content)
            name = "GET /v1/health after everything"
            with probe.guarded(name):
                reply = call(server, "GET", "/v1/health")
                probe.row(name, str(reply.status), "200", reply.status == 200)
        finally:
            code = server.stop()
            if started is not None:
                with contextlib.suppress(Exception):
                    started.result().stop()
            pool.shutdown()
        if server.own:
            probe.row("SIGTERM stops the server", f"exit {code}", "exit 0", code == 0)
            check_log(probe, server)
            probe.figures["first_line"] = server.output().split(b"\n", 1)[0].decode(errors="replace")
        else:
            probe.skip("server log, SIGTERM", "--url: not this script's server")
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in root.glob("server-*.log"):
                shutil.copy(log, args.logs / log.name)

    figures = probe.figures
    figures.update(cpu=cpu_model(), cores=os.cpu_count(), date=datetime.date.today().isoformat(),
                   python=platform.python_version(), seconds=round(time.perf_counter() - began, 1),
                   url=args.url or "own server", passed=sum(r.ok is True for r in probe.rows),
                   failed=len(probe.failed), skipped=sum(r.ok is None for r in probe.rows))
    print()
    print(f"{figures['cpu']}, {figures['cores']} cores, {figures['date']}, {figures['seconds']} s")
    if "peak_rss_growth_max_bytes" in figures:
        print(f"server RSS at idle {figures['idle_rss_bytes'] / 2**20:.0f} MiB; peak growth under the heavy requests "
              f"{figures['peak_rss_growth_max_bytes'] / 2**20:+.0f} MiB against a bound of "
              f"{figures['memory_bound_bytes'] / 2**20:.0f} MiB")
    if "health_seconds_under_idle_sockets" in figures:
        seconds = figures["health_seconds_under_idle_sockets"]
        print(f"/v1/health with {IDLE_SOCKETS} idle sockets: {seconds * 1000:.0f} ms")
    if "log_bytes" in figures:
        print(f"server output (stderr and the --debug access log on stdout): {figures['log_bytes']} bytes in all, "
              f"{figures['log_bytes_idle_probe']} during the idle-socket probe, "
              f"{figures['log_bytes_burst_probe']} during the burst")
    print(f"{figures['passed']} passed, {figures['failed']} failed, {figures['skipped']} skipped")
    if args.json:
        rows = [{"probe": r.name, "got": r.got, "expected": r.expected, "ok": r.ok} for r in probe.rows]
        args.json.write_text(json.dumps({"figures": figures, "rows": rows}, indent=2) + "\n")
    sys.exit(1 if probe.failed else 0)


if __name__ == "__main__":
    main()
