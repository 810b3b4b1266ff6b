"""The `conformance` and `simulate` commands: exit statuses, an unreachable target, and
arguments that would be silently ignored are refused."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from fsm.cli import build_parser, main
from fsm.conformance import suite


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_target_exits_2_quickly_without_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    code = main(["conformance", f"grpc://127.0.0.1:{_closed_port()}", "--budget", "0"], out)
    assert code == 2 and out.getvalue() == "", "no verdict is printed"
    err = capsys.readouterr().err
    assert "nothing listens" in err and "nothing was checked" in err
    assert "FAIL" not in out.getvalue() and " fail " not in err


def test_a_run_that_observed_nothing_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = suite.run_suite

    def only_unknown(*args: Any, **kwargs: Any) -> suite.SuiteResult:
        result = real(*args, **kwargs)
        verdicts = tuple(
            suite.Verdict(v.case, "unknown", "not observed", (), (), 0.0) for v in result.verdicts
        )
        return suite.SuiteResult(
            result.target, result.seed, result.prefix, verdicts, None, (), result.seconds
        )

    monkeypatch.setattr(suite, "run_suite", only_unknown)
    assert main(["conformance", "--budget", "0"], io.StringIO()) == 3
    assert "observed nothing" in capsys.readouterr().err


def test_exit_statuses_are_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["conformance"].format_help()  # type: ignore[attr-defined]
    for status in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {status}" in text
    assert "same seed, same requests" not in text
    assert "names differ" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["conformance", "--api-key", "msco_x", "--budget", "0"],
        ["conformance", "--tls-root-cert", "roots.pem", "--budget", "0"],
        ["conformance", "grpc://127.0.0.1:1", "--profile", "mosaicod-0.3"],
        ["conformance", "--self-test", "--report", "json"],
        ["conformance", "--self-test", "grpc://127.0.0.1:1"],
        ["simulate", "--fault", "SESSION_FINALIZE#1:internal", "--faults", "2"],
        ["simulate", "--fault", "SESSION_FINALIZE#1:internal", "--workers", "2"],
    ],
)
def test_arguments_that_would_be_ignored_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert main(argv, out) == 2
    assert out.getvalue() == ""
    assert f"mosaico-fsm {argv[0]}: error:" in capsys.readouterr().err
