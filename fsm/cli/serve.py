"""`mosaico-fsm serve`: the Flight reference server. Every argument is checked here before
the server starts (address, port, TLS pair, fault plan, files to write), so a mistake is one
line naming it rather than whatever the server library reports."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import ssl
import sys
from pathlib import Path
from typing import TextIO

from fsm.cli.common import (
    CliError,
    HelpFormatter,
    Parser,
    port_number,
    readable_file,
    writable_path,
)
from fsm.errors import ArgumentError, MosaicoError
from fsm.spec import load_spec

__all__ = ["add_parser", "check_address", "check_tls_pair", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the Flight reference server",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=port_number, default=6726, help="TCP port (0 picks a free port)")
    p.add_argument(
        "--profile",
        default="spec",
        choices=sorted(load_spec().profiles),
        help="behaviour: the specification, or a real server's recorded deviations",
    )
    from fsm.spec.lines import DEFAULT_LINE, line_names

    p.add_argument(
        "--protocol",
        default=DEFAULT_LINE,
        choices=line_names(),
        metavar="LINE",
        help="protocol line to speak, as its SDK release expects it "
        f"({', '.join(line_names())}); profiles other than 'spec' combine only with the "
        "lines their server build speaks",
    )
    p.add_argument(
        "--api-key-auth",
        action="store_true",
        help="require API keys (a manage key is issued at start and printed)",
    )
    p.add_argument(
        "--bootstrap-key-file",
        metavar="F",
        type=writable_path,
        help="with --api-key-auth: write the bootstrap manage key to F (mode 0600) "
        "instead of printing it",
    )
    p.add_argument("--tls-cert", metavar="F", type=readable_file, help="PEM certificate chain")
    p.add_argument("--tls-key", metavar="F", type=readable_file, help="PEM private key")
    p.add_argument(
        "--fault-plan",
        metavar="F",
        type=readable_file,
        help="JSON fault plan (format in README, 'Fault plans')",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="what the server logs on stderr",
    )
    p.add_argument(
        "--trace",
        metavar="F",
        type=writable_path,
        help="record every request and answer as JSON lines in F",
    )
    from transport.flight.limits import ServerLimits

    defaults = ServerLimits()
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=defaults.max_message_bytes,
        metavar="N",
        help="largest gRPC message received or sent",
    )
    p.add_argument(
        "--max-streams",
        type=int,
        default=defaults.max_streams,
        metavar="N",
        help="DoPut streams open at once; one more is refused (resource_exhausted)",
    )
    p.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=defaults.stream_idle_timeout,
        metavar="S",
        help="cancel a DoPut stream silent, or a DoGet stream not read, for S seconds (0: never)",
    )


def check_address(host: str, port: int) -> None:
    """CliError unless `host` is an address of this machine and `port` is free on it (a
    trial bind, released at once; port 0 only checks the address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise CliError(
            f"--host {host}: not an address or a name this machine can resolve "
            f"({exc.args[-1] if exc.args else exc})",
            "use an address of this machine, such as 127.0.0.1 or 0.0.0.0 for every interface",
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as trial:
        trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            trial.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"port {port} on {host} is in use",
                    "stop what listens there, or choose another --port (0 picks a free one)",
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise CliError(
                    f"--host {host} is not an address of this machine",
                    "use 127.0.0.1, or 0.0.0.0 for every interface",
                ) from None
            if exc.errno == errno.EACCES:
                raise CliError(
                    f"no permission to listen on port {port}",
                    "ports below 1024 need privileges; choose a higher --port",
                ) from None
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_tls_pair(cert: Path, key: Path) -> None:
    """CliError unless `cert` is a PEM certificate chain and `key` its PEM private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        cert_text = cert.read_bytes()
        key_text = key.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" not in cert_text:
            raise CliError(
                f"--tls-cert {cert} holds no PEM certificate", "give the certificate chain file"
            ) from None
        if b"PRIVATE KEY-----" not in key_text:
            raise CliError(
                f"--tls-key {key} holds no PEM private key", "give the unencrypted key file"
            ) from None
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise CliError(
                f"--tls-key {key} is not the private key of --tls-cert {cert}",
                "give the key the certificate was issued for",
            ) from None
        raise CliError(f"the TLS pair {cert}, {key} cannot be used: {exc.reason or exc}") from None


def _write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600), whatever was there before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def run(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from fsm.faults import FaultPlan

    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError(
            "--tls-cert and --tls-key go together", "give both files, or neither for plain gRPC"
        )
    if args.bootstrap_key_file is not None and not args.api_key_auth:
        raise CliError(
            "--bootstrap-key-file needs --api-key-auth: without it the server issues no key",
            "add --api-key-auth",
        )
    if args.tls_cert is not None:
        check_tls_pair(args.tls_cert, args.tls_key)
    faults = None
    if args.fault_plan is not None:
        try:
            faults = FaultPlan.loads(args.fault_plan.read_text(encoding="utf-8"))
        except (MosaicoError, UnicodeDecodeError) as exc:
            raise CliError(
                f"--fault-plan {args.fault_plan}: {exc}", "see README, 'Fault plans'"
            ) from None
    from transport.flight.limits import ServerLimits

    try:
        limits = ServerLimits(
            max_message_bytes=args.max_message_bytes,
            max_streams=args.max_streams,
            stream_idle_timeout=args.stream_idle_timeout or None,
        )
    except ValueError as exc:
        raise CliError(str(exc), "see mosaico-fsm serve --help") from None
    check_address(args.host, args.port)

    from transport.flight.server import SignalStop, TlsFiles, serve_forever, start_server
    from transport.server.model import ServerModel

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    tls = TlsFiles(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
    try:
        model = ServerModel(profile=args.profile, auth=args.api_key_auth, protocol=args.protocol)
    except ArgumentError as exc:
        raise CliError(str(exc), "see mosaico-fsm serve --help") from None
    if args.trace:
        from transport.server.trace import ServerTrace

        model.trace = ServerTrace(args.trace)
    with SignalStop() as signals:
        try:
            running = start_server(
                model, host=args.host, port=args.port, tls=tls, faults=faults, limits=limits
            )
        except Exception as exc:  # whatever the server library raises: one line, no traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CliError(f"the server did not start on {args.host}:{args.port}: {first}") from exc
        idle = limits.stream_idle_timeout
        out.write(
            f"mosaico-fsm reference server on {running.location} (profile {args.profile}; "
            f"protocol {args.protocol}; "
            f"gRPC messages up to {limits.max_message_bytes} bytes, {limits.max_streams} DoPut "
            "streams at once, "
            + (f"idle streams cancelled after {idle:g} s" if idle else "no idle timeout")
            + ")\n"
        )
        if args.api_key_auth:
            token = running.api_keys["manage"]
            if args.bootstrap_key_file:
                _write_secret(args.bootstrap_key_file, token + "\n")
                out.write(f"bootstrap manage key written to {args.bootstrap_key_file}\n")
            else:
                out.write(f"bootstrap manage key: {token}\n")
            if tls is None:
                sys.stderr.write(
                    "mosaico-fsm serve: warning: API keys travel in clear text without TLS "
                    "(give --tls-cert and --tls-key)\n"
                )
        out.flush()

        def stopped(signum: int) -> None:
            out.write(f"stopped on signal {signum}\n")
            out.flush()

        serve_forever(running, signals, stopped)
    if model.trace is not None:
        model.trace.close()
    return 0
