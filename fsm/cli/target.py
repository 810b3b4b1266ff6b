"""What a conformance target given by URL is, found out before any request: a name that
resolves, something listening, TLS or not as the URL says, a certificate that is trusted, and
HTTP/2 rather than HTTP/1. Each problem is one CliError naming it, where the Flight client
would report a cut-off gRPC status."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlparse

from fsm.cli.common import CliError

__all__ = ["check_target"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""The HTTP/2 client preface and an empty SETTINGS frame."""


def check_target(url: str, roots: bytes | None, timeout: float = 5.0) -> None:
    """CliError unless `url` (grpc:// or grpc+tls://) leads to an HTTP/2 endpoint that can be
    reached, speaking TLS exactly when the URL (or `roots`) says so, with a trusted certificate."""
    parsed = urlparse(url)
    if parsed.scheme not in ("grpc", "grpc+tcp", "grpc+tls") or not parsed.hostname:
        raise CliError(
            f"{url!r} is not a target URL", "write grpc://host:port, or grpc+tls://host:port"
        )
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None:
        raise CliError(f"{url} has no valid port", "write grpc://host:port (mosaicod uses 6726)")
    host = parsed.hostname
    tls = parsed.scheme == "grpc+tls" or roots is not None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise CliError(
            f"cannot resolve the host {host} ({exc.strerror})", "check the URL"
        ) from None
    except ConnectionRefusedError:
        raise CliError(
            f"nothing listens on {host}:{port}", "start the server, or check the URL's port"
        ) from None
    except TimeoutError:
        raise CliError(f"{host}:{port} did not accept a connection within {timeout:g} s") from None
    except OSError as exc:
        raise CliError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    with sock:
        if tls:
            _check_tls(sock, host, port, roots)
        else:
            _check_plain(sock, url, host, port)


def _check_tls(sock: socket.socket, host: str, port: int, roots: bytes | None) -> None:
    try:
        context = ssl.create_default_context(
            cadata=roots.decode("ascii", "replace") if roots is not None else None
        )
    except ssl.SSLError as exc:
        raise CliError(f"--tls-root-cert holds no usable PEM certificate ({exc.reason})") from None
    context.set_alpn_protocols(["h2"])
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return
    except ssl.SSLCertVerificationError as exc:
        hint = (
            "check that --tls-root-cert holds the certificate of the CA that signed it"
            if roots is not None
            else "pass --tls-root-cert F, F holding the server's certificate or its CA's"
        )
        raise CliError(
            f"the TLS certificate of {host}:{port} is not trusted: {exc.verify_message}", hint
        ) from None
    except ssl.SSLError as exc:
        raise CliError(
            f"no TLS handshake with {host}:{port} ({exc.reason})",
            "if the server does not use TLS, write grpc:// and no --tls-root-cert",
        ) from None
    except OSError as exc:
        raise CliError(
            f"{host}:{port} closed the connection during the TLS handshake ({exc})"
        ) from None


def _check_plain(sock: socket.socket, url: str, host: str, port: int) -> None:
    try:
        sock.sendall(_PREFACE)
        sock.settimeout(3.0)
        head = sock.recv(16)
    except OSError:
        return  # nothing conclusive: the Flight client says what it sees
    if head.startswith(b"HTTP/"):
        raise CliError(
            f"{host}:{port} is an HTTP/1 server, not a gRPC one",
            "check the URL's port (mosaicod listens on 6726)",
        )
    if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":
        raise CliError(
            f"{host}:{port} speaks TLS", f"write {url.replace('grpc://', 'grpc+tls://', 1)}"
        )
    if len(head) >= 4 and head[3] != 0x04:  # an HTTP/2 server opens with a SETTINGS frame
        raise CliError(
            f"{host}:{port} is not a gRPC server: it does not speak HTTP/2 "
            f"(it answered {head[:12]!r}...)",
            "check the URL's port (mosaicod listens on 6726)",
        )
