"""The mistakes a new user makes with `mosaico-fsm`, each run as the real command in a
subprocess: one line on stderr (with a hint where one helps), no traceback, no gRPC log line,
exit status 2 for a bad argument or an unusable target, checked before any work starts."""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def mosaico_fsm(
    *argv: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, with this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "fsm.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *words: str, status: int = 2) -> str:
    """Assert the run failed with `status` and said exactly one line on stderr holding every
    word; return that line."""
    lines = result.stderr.splitlines()
    assert result.returncode == status, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("mosaico-fsm") and "error:" in line, line
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in line, (word, line)
    return line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -----------------------------------------------------------------------------------------------
# serve


def test_serve_on_a_port_in_use_is_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = mosaico_fsm("serve", "--port", str(port), timeout=30)
    line = one_line_error(result, "in use", str(port), "hint:")
    assert "E0000" not in result.stderr and "absl" not in result.stderr, line


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_out_of_range(port: str) -> None:
    one_line_error(mosaico_fsm("serve", "--port", port), "--port")


def test_serve_refuses_a_host_it_cannot_listen_on() -> None:
    one_line_error(mosaico_fsm("serve", "--host", "999.1.1.1", "--port", "0"), "999.1.1.1")
    one_line_error(
        mosaico_fsm("serve", "--host", "192.0.2.1", "--port", "0"), "not an address of this"
    )


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    from transport.pytest_plugin import self_signed_certificate

    files = self_signed_certificate(tmp_path)
    return files.cert, files.key


def test_serve_refuses_unusable_tls_files(tmp_path: Path, tls_pair: tuple[Path, Path]) -> None:
    from transport.pytest_plugin import self_signed_certificate

    cert, key = tls_pair
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem\n")
    other = tmp_path / "other"
    other.mkdir()
    other_key = self_signed_certificate(other).key
    cases = [
        (["--tls-cert", str(garbage), "--tls-key", str(key)], "no PEM certificate"),
        (["--tls-cert", str(cert), "--tls-key", str(garbage)], "no PEM private key"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], "is not the private key"),
        (["--tls-cert", str(cert)], "go together"),
        (["--tls-cert", str(tmp_path / "absent.pem"), "--tls-key", str(key)], "no such file"),
    ]
    for extra, words in cases:
        one_line_error(mosaico_fsm("serve", "--port", "0", *extra), words)


def test_bootstrap_key_file_needs_auth() -> None:
    one_line_error(
        mosaico_fsm("serve", "--port", "0", "--bootstrap-key-file", "k.txt"), "--api-key-auth"
    )


def _serve_until_ready(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Start `serve`, wait for its first line, stop it with SIGINT, return what it said."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsm.cli", "serve", "--port", "0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def test_bootstrap_key_file_is_private_and_the_clear_text_warning_goes_to_stderr(
    tmp_path: Path,
) -> None:
    keyfile = tmp_path / "k.txt"
    keyfile.write_text("old\n")
    keyfile.chmod(0o644)
    result = _serve_until_ready(
        "--api-key-auth", "--bootstrap-key-file", str(keyfile), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert keyfile.read_text().startswith("msco_")
    assert "clear text" in result.stderr and "clear text" not in result.stdout


# -----------------------------------------------------------------------------------------------
# bad arguments of every command: exit 2, before any work


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["diagram", "foo"], "unknown lifecycle"),
        (["simulate", "--scenario", "nosuch"], "unknown scenario"),
        (["simulate", "--fault", "garbage"], "OPERATION#N:EFFECT"),
        (["simulate", "--fault", "NO_SUCH_OP#1:internal"], "NO_SUCH_OP"),
        (["simulate", "--workers", "0"], "--workers"),
        (["simulate", "--workers", "-1"], "--workers"),
        (["conformance", "--budget", "-5"], "--budget"),
        (["conformance", "--budget", "nan"], "--budget"),
        (["conformance", "--out", "/nonexistent/dir/r.txt"], "/nonexistent/dir"),
        (["conformance", "--self-test", "--report", "json"], "--self-test"),
        (["conformance", "--workers", "2"], "--workers"),
        (["conformance", "--self-test", "--workers", "0"], "--workers"),
        (["check-trace", "absent.jsonl"], "no such file"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_in_one_line(argv: list[str], words: str, tmp_path: Path) -> None:
    result = mosaico_fsm(*argv, cwd=tmp_path)
    one_line_error(result, words)
    assert result.stdout == "", "refused before any run, nothing is reported"


def test_check_trace_of_a_binary_file(tmp_path: Path) -> None:
    binary = tmp_path / "trace.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    one_line_error(mosaico_fsm("check-trace", str(binary)), "not a text file", "hint:")


# -----------------------------------------------------------------------------------------------
# conformance targets that cannot be checked


def test_nothing_listening() -> None:
    one_line_error(
        mosaico_fsm("conformance", f"grpc://127.0.0.1:{_free_port()}", "--budget", "0"),
        "nothing listens",
    )


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_server_is_not_a_grpc_server(http_server: int) -> None:
    one_line_error(
        mosaico_fsm("conformance", f"grpc://127.0.0.1:{http_server}", "--budget", "0"),
        "not a gRPC server",
    )


@pytest.mark.flight
def test_a_flight_server_that_is_not_mosaico() -> None:
    from pyarrow import flight

    server = flight.FlightServerBase("grpc://127.0.0.1:0")
    try:
        result = mosaico_fsm("conformance", f"grpc://127.0.0.1:{server.port}", "--budget", "0")
    finally:
        server.shutdown()
    one_line_error(result, "not a Mosaico server")
    assert "FAIL" not in result.stdout


@pytest.mark.flight
def test_auth_mistakes_say_to_pass_a_manage_key() -> None:
    from fsm.enums import FlightAction
    from transport.flight.client import FlightTransport
    from transport.flight.server import start_server

    with start_server(auth=True) as running:
        url = running.location
        admin = FlightTransport(url, api_key=running.api_keys["manage"])
        read = admin.action(
            FlightAction.API_KEY_CREATE, {"permissions": "read", "description": "r"}
        )
        admin.close()
        assert read.is_ok
        for extra, words in [
            ([], "requires an API key"),
            (["--api-key", "msco_bogus"], "refuses the key"),
            (["--api-key", read.value["api_key_token"]], "may not manage keys"),
        ]:
            result = mosaico_fsm("conformance", url, "--budget", "0", *extra)
            one_line_error(result, words, "--api-key")
            assert "FAIL" not in result.stdout


@pytest.mark.flight
def test_an_untrusted_certificate_names_the_cause_and_the_option(
    tls_pair: tuple[Path, Path],
) -> None:
    from transport.flight.server import TlsFiles, start_server

    with start_server(tls=TlsFiles(*tls_pair)) as running:
        result = mosaico_fsm("conformance", running.location, "--budget", "0")
    line = one_line_error(result, "not trusted", "self-signed", "--tls-root-cert")
    assert "I0000" not in result.stderr, line


# -----------------------------------------------------------------------------------------------
# Ctrl-C: exit 130, what finished is reported, no traceback


def _interrupted(*argv: str, when: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the command (with --progress) in its own process group and press Ctrl-C (SIGINT
    to the group) once its progress on stderr matches the pattern `when`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsm.cli", *argv, "--progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 120
    while not re.search(when.encode(), seen) and time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert re.search(when.encode(), seen), seen[-500:]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("workers", [None, "2"])
def test_ctrl_c_in_simulate_reports_the_runs_that_ended(
    workers: str | None, tmp_path: Path
) -> None:
    extra = ["--workers", workers] if workers else []
    result = _interrupted(
        "simulate", "--faults", "2", *extra, when=r"runs\D*[1-9]\d*/", cwd=tmp_path
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    last = result.stdout.splitlines()[-1]
    assert re.match(r"interrupted after \d+ runs? of \d+ scenarios", last), last


def test_ctrl_c_in_conformance_exploration_reports_the_requirements(tmp_path: Path) -> None:
    result = _interrupted("conformance", "--budget", "60", when=r"exploring", cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "PASS     SEQ-CREATE" in result.stdout
    from fsm.conformance.cases import CASES

    every = len(CASES)
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"interrupted during the exploration: {every} passed"), last
    assert not (tmp_path / ".hypothesis").exists()


def test_ctrl_c_in_self_test_reports_the_servers_measured(tmp_path: Path) -> None:
    result = _interrupted(
        "conformance",
        "--self-test",
        "--budget",
        "0",
        when=r"servers measured\D*[1-9]\d*/",
        cwd=tmp_path,
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("The conformance suite against broken reference servers")
    assert re.match(r"interrupted after \d+ broken servers: self-test: ", lines[-1]), lines[-1]
