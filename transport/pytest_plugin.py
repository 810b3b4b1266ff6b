"""A pytest plugin: a Mosaico server for the tests of code built on a Mosaico client.

Installed with mosaico-fsm (entry point `pytest11`), it gives two fixtures:

- `mosaico_server`: a reference server on 127.0.0.1 and a free port, started for the test and
  stopped after it. Options come from a `mosaico_server` marker:
  `@pytest.mark.mosaico_server(profile="mosaicod-0.3", auth=True, tls=True, faults=plan)`;
  `protocol="0.7"` makes it speak another protocol line of `specs/lines/` (default 0.3).
- `mosaico_server_factory`: a function taking the same options, for several servers in one
  test; every server it starts is stopped after the test.

The fixture's value tells where to connect (`host`, `port`, `location`, `tls_cert_path`),
which keys to use (`api_key`, a manage key when auth is on; `issue_key(permission)` for
others), and what the server holds (`model.snapshot()`, `trace` of every request).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from fsm.enums import APIKeyPermissionEnum
from fsm.errors import ArgumentTypeError, TransportError
from fsm.faults import FaultPlan
from transport.flight.limits import ServerLimits
from transport.flight.server import RunningServer, TlsFiles, start_server
from transport.server.model import ServerModel
from transport.server.trace import ServerTrace

__all__ = ["MosaicoServer", "mosaico_server", "mosaico_server_factory", "self_signed_certificate"]


@attrs.define
class MosaicoServer:
    """A running reference server, as the fixtures hand it to a test."""

    running: RunningServer
    trace: ServerTrace
    tls_cert_path: str | None = None

    @property
    def host(self) -> str:
        return self.running.host

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def location(self) -> str:
        return self.running.location

    @property
    def model(self) -> ServerModel:
        return self.running.model

    @property
    def api_key(self) -> str | None:
        """A manage key when authentication is on, else None."""
        return self.running.api_keys.get("manage")

    def issue_key(
        self, permission: APIKeyPermissionEnum | str = APIKeyPermissionEnum.Manage
    ) -> str:
        """A new key with `permission` (only meaningful when authentication is on)."""
        return self.model.bootstrap_key(APIKeyPermissionEnum(permission), "issued by the test")

    def stop(self) -> None:
        self.running.stop()


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A certificate and key for `host` (and localhost), written as PEM files in `directory`.
    Needs the `cryptography` package."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise TransportError("a TLS test server needs the 'cryptography' package") from exc
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path)


def _start(directory: Path, **options: Any) -> MosaicoServer:
    limit_names = {"max_message_bytes", "max_streams", "stream_idle_timeout"}
    known = {"profile", "auth", "tls", "faults", "seed", "protocol", *limit_names}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ArgumentTypeError(
            f"unknown mosaico_server option(s): {', '.join(unknown)}; use {sorted(known)}"
        )
    faults = options.get("faults")
    if isinstance(faults, (dict, str)):
        faults = FaultPlan.loads(faults) if isinstance(faults, str) else FaultPlan.from_json(faults)
    model = ServerModel(
        profile=options.get("profile", "spec"),
        auth=bool(options.get("auth", False)),
        seed=options.get("seed"),
        protocol=options.get("protocol"),
    )
    trace = ServerTrace()
    model.trace = trace
    tls = self_signed_certificate(directory) if options.get("tls") else None
    limits = ServerLimits(**{k: v for k, v in options.items() if k in limit_names})
    running = start_server(model, tls=tls, faults=faults, limits=limits)
    return MosaicoServer(running, trace, str(tls.cert) if tls else None)


@pytest.fixture
def mosaico_server_factory(tmp_path: Path) -> Iterator[Callable[..., MosaicoServer]]:
    """Start reference servers with options (profile, protocol, auth, tls, faults, seed)."""
    started: list[MosaicoServer] = []

    def factory(**options: Any) -> MosaicoServer:
        directory = tmp_path / f"mosaico-server-{len(started)}"
        directory.mkdir()
        server = _start(directory, **options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def mosaico_server(
    request: pytest.FixtureRequest, mosaico_server_factory: Callable[..., MosaicoServer]
) -> MosaicoServer:
    """A reference server for this test; options from a `mosaico_server` marker."""
    marker = request.node.get_closest_marker("mosaico_server")
    options = dict(marker.kwargs) if marker is not None else {}
    return mosaico_server_factory(**options)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mosaico_server(profile='spec', protocol='0.3', auth=False, tls=False, faults=None, "
        "seed=None, "
        "max_message_bytes=..., max_streams=..., stream_idle_timeout=...): "
        "options of the mosaico_server fixture",
    )
