"""Each protocol line's real SDK release against the reference server speaking that line.

For every line of `specs/lines/`, its release (`enum_release`, installed side by side by
`tests/sdks/install.py`) runs `tests/sdks/drive.py` in a subprocess against a server started
here with `protocol=<line>` and API keys on: connect, write three topics, read them back,
list, query, the Report and Delete session policies and the Finalize topic policy with an
exception, a second session on the written sequence, and keys. The driver prints what the SDK
saw; each test asserts one check on it and on the server's own state (`model.snapshot()`).

One server and one driver run per release, shared by that release's tests. A release that is
not installed skips, unless MOSAICO_FSM_REQUIRE_SDK=1 (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm.conformance.clients import ClientReport, check_client_trace, group_by_sequence
from fsm.enums import APIKeyPermissionEnum
from fsm.spec.lines import load_line, load_lines
from tests.harness import sdk_missing
from tests.sdks.install import MARKER, sdk_dir
from transport.flight.limits import ServerLimits
from transport.flight.server import RunningServer, start_server
from transport.server.model import ServerModel
from transport.server.trace import ServerTrace

pytestmark = pytest.mark.interop

DRIVER = Path(__file__).parent / "sdks" / "drive.py"
LINES = {line.enum_release: name for name, line in load_lines().items()}
"""Each line's SDK release -> the line."""
BASE_NS = 1_700_000_000_000_000_000
STEP_NS = 10_000_000
ROWS = 5
PREFIX = "drv"
LIMITS = ServerLimits(max_message_bytes=4 * 1024 * 1024)
"""Small enough that a record of LARGE_RECORD bytes exceeds any message the server takes."""
LARGE_RECORD = 5 * 1024 * 1024


def release_dir(release: str) -> Path:
    """The installed release, or a skip (a failure when CI requires the SDKs)."""
    path = sdk_dir() / f"mosaicolabs-{release}"
    if not (path / MARKER).exists():
        sdk_missing(f"mosaicolabs {release} is not installed (python tests/sdks/install.py)")
    return path


class Run:
    """One release's driver run against its own server (kept running for the assertions)."""

    def __init__(self, release: str) -> None:
        self.release = release
        self.line = LINES[release]
        path = release_dir(release)
        self.model = ServerModel(protocol=self.line, auth=True, seed=7)
        self.model.trace = ServerTrace()
        self.server: RunningServer = start_server(self.model, limits=LIMITS)
        keys = {
            "manage": self.server.api_keys["manage"],
            "read": self.model.bootstrap_key(APIKeyPermissionEnum.Read, "read key"),
        }
        config = {
            "host": self.server.host,
            "port": self.server.port,
            "prefix": PREFIX,
            "large_record_bytes": LARGE_RECORD,
        }
        env = {**os.environ, "PYTHONPATH": str(path)}
        done = subprocess.run(
            [sys.executable, str(DRIVER), json.dumps({**config, "keys": keys})],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        self.results: dict[str, dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
        self.snapshot = self.model.snapshot()

    def check(self, name: str) -> dict[str, Any]:
        result = self.results.get(name)
        assert result is not None, f"{self.release}: the driver ran no {name!r} check"
        assert result["ok"], f"{self.release} {name}: {result['error']}\n{result['trace']}"
        return result

    def trace_report(self, sequence: str) -> ClientReport:
        """The client's trace of `sequence`, checked against its line's tables."""
        assert self.model.trace is not None
        line = load_line(self.line)
        events = group_by_sequence(self.model.trace.events)[sequence]
        return check_client_trace(events, line.spec, sequence=sequence, client=line.client_parties)

    def rows(self, locator: str) -> int:
        return int(self.snapshot["topics"][locator]["rows"])

    def session_states(self, sequence: str) -> list[str]:
        snap = self.snapshot
        return [snap["sessions"][u]["state"] for u in snap["sequences"][sequence]["sessions"]]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    started: dict[str, Run] = {}
    yield started
    for run in started.values():
        run.server.stop()


@pytest.fixture(params=sorted(LINES))
def run(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Run:
    release = str(request.param)
    if release not in runs:
        runs[release] = Run(release)
    return runs[release]


def name(what: str) -> str:
    return f"{PREFIX}_{what}"


def test_connect(run: Run) -> None:
    run.check("connect")


def test_write_several_topics(run: Run) -> None:
    result = run.check("write")
    assert result["status"] == "finalized"
    assert result["topics"] == ["finalized"] * 3
    seq = name("run")
    for topic in ("imu/front", "imu/rear", "gps"):
        assert run.rows(f"{seq}/{topic}") == ROWS
        assert run.snapshot["topics"][f"{seq}/{topic}"]["state"] == "locked"
    assert run.snapshot["sequences"][seq]["user_metadata"] == {"kind": "drive", "n": 1}


def test_read_back_equal(run: Run) -> None:
    result = run.check("read")
    assert result["front_stamps"] == [BASE_NS + i * STEP_NS for i in range(ROWS)]
    assert result["rear_stamps"] == [BASE_NS + i * STEP_NS + 1 for i in range(ROWS)]
    assert result["front_equal"] and result["rear_equal"] and result["gps_equal"]


def test_list(run: Run) -> None:
    listed = run.check("list")["sequences"]
    assert listed == [name("run")]  # listed right after the first write


def test_query(run: Run) -> None:
    result = run.check("query")
    topics = ["gps", "imu/front", "imu/rear"]
    assert [(s, [t.lstrip("/") for t in ts]) for s, ts in result["by_name"]] == [
        (name("run"), topics)
    ]
    assert [(s, [t.lstrip("/") for t in ts]) for s, ts in result["by_topic"]] == [
        (name("run"), ["imu/front"])
    ]
    assert result["none"] == []


def test_data_query_and_filter_actions(run: Run) -> None:
    """A query on stored data (imu/front's x is 0..2, imu/rear's 50..52), and where the line
    has them the streaming filter actions on its answer, through the SDK's own calls."""
    result = run.check("data_query")
    assert result["high"] == ["imu/rear"]
    assert result["some"] == ["imu/front", "imu/rear"]
    if "TOPIC_FILTER_CLUSTERIZE" not in run.model.spec.operations:
        assert "clusters_whole" not in result
        return
    rear = [BASE_NS + i * STEP_NS + 1 for i in range(ROWS)]
    assert result["clusters_whole"] == [[rear[0], rear[-1]]]
    assert result["clusters_split"] == [[t, t] for t in rear]
    # imu/front has x > 1 at rows 3 and 4; imu/rear at every row: they meet on front's span.
    assert result["intersect"] == [[BASE_NS + 3 * STEP_NS, BASE_NS + 4 * STEP_NS]]


def test_report_policy(run: Run) -> None:
    result = run.check("report_policy")
    assert result["raised"] == "report me" and result["status"] == "error"
    seq = name("report")
    notes = run.snapshot["sequences"][seq]["notifications"]
    assert len(notes) == 1 and notes[0][0] == "error" and "report me" in notes[0][1]
    assert run.snapshot["topics"][f"{seq}/imu"]["notifications"] == [("error", "report me")]


def test_delete_policy_purges(run: Run) -> None:
    result = run.check("delete_policy")
    if "SDK-DOUBLE-SEQUENCE-DELETE" in run.model.spec.deviations:
        # The release deletes the sequence twice: the second delete's error replaces the
        # user's exception (PROTOCOL §11.8).
        assert result["raised"].startswith("Exception: Error sending 'delete' for sequence")
    else:  # the user's exception propagates
        assert result["raised"] == "RuntimeError: delete me"
    # Either way the purge removed the whole new sequence.
    assert not result["listed"]
    assert name("delete") not in run.snapshot["sequences"]
    assert not any(t.startswith(name("delete") + "/") for t in run.snapshot["topics"])


def test_topic_policy(run: Run) -> None:
    result = run.check("topic_policy")
    assert result["status"] == "finalized"
    assert (result["failing"], result["healthy"]) == ("finalized_with_error", "finalized")
    assert result["gps_rows"] == 1
    seq = name("topicpol")
    assert run.snapshot["topics"][f"{seq}/imu"]["notifications"] == [("error", "bad record")]
    assert run.session_states(seq) == ["finalized"]


def test_topic_policy_ignore(run: Run) -> None:
    result = run.check("topic_ignore")
    assert (result["after_error"], result["after_push"]) == ("ignored_last_error", "active")
    assert (result["status"], result["final"]) == ("finalized", "finalized")
    stamps = [BASE_NS + i * STEP_NS for i in range(3)]
    assert result["read_stamps"] == stamps
    seq = name("topicign")
    assert run.rows(f"{seq}/imu") == 3
    assert run.snapshot["topics"][f"{seq}/imu"]["notifications"] == [("error", "ignored record")]


def test_topic_policy_raise(run: Run) -> None:
    result = run.check("topic_raise")
    assert result["raised"] == "raised record"
    assert (result["status"], result["final"]) == ("error", "finalized_with_error")
    seq = name("topicraise")
    assert run.snapshot["topics"][f"{seq}/imu"]["notifications"] == [("error", "raised record")]
    [(kind, message)] = run.snapshot["sequences"][seq]["notifications"]
    assert kind == "error" and "raised record" in message


def test_add_session(run: Run) -> None:
    result = run.check("add_session")
    assert result["update_status"] == "finalized" and result["extra_equal"]
    seq = name("run")
    # The writer's session, then the handler's update.
    assert run.session_states(seq) == ["finalized"] * 2
    assert run.rows(f"{seq}/extra") == 1
    if "sequence_update_status" in result:  # client.sequence_update, where the SDK has it
        assert result["sequence_update_status"] == "finalized" and result["direct_extra_equal"]
        assert run.session_states(name("direct")) == ["finalized"] * 2
        assert run.rows(f"{name('direct')}/extra2") == 1
    else:
        assert name("direct") not in run.snapshot["sequences"]


def test_keys(run: Run) -> None:
    result = run.check("keys")
    assert result["read_lists"] is True
    assert result["write_refused"] is not None
    assert name("refused") not in run.snapshot["sequences"]
    if "API_KEY_CREATE" in run.model.spec.operations:
        assert result["created_description"] == "made by the driver"
        assert result["revoked"] is True
    else:
        assert "created_description" not in result


@pytest.mark.parametrize(
    "what", ["run", "report", "delete", "topicpol", "topicign", "topicraise", "large"]
)
def test_trace_passes_check_trace(run: Run, what: str) -> None:
    """What each release sent for a sequence conforms to its line's tables, or departs from
    them only by a deviation the line records for its SDK."""
    assert run.model.trace is not None
    if name(what) not in group_by_sequence(run.model.trace.events):  # a check not run here
        assert what == "large" and "too_large" not in run.results
        return
    report = run.trace_report(name(what))
    assert report.violation is None, [str(f) for f in report.findings]


def test_a_session_opened_with_sequence_update_passes_check_trace(run: Run) -> None:
    """client.sequence_update (0.6 and later) opens a session without reading the sequence
    first; the line's enter-updater row marks that read optional, so the trace conforms."""
    result = run.check("add_session")
    if "sequence_update_status" not in result:  # a release without it wrote no such sequence
        assert run.model.trace is not None
        assert name("direct") not in group_by_sequence(run.model.trace.events)
        return
    report = run.trace_report(name("direct"))
    assert report.violation is None, [str(f) for f in report.findings]
    assert report.conforms and report.role == "writer, updater"


def test_a_record_too_large_for_the_servers_limits(run: Run) -> None:
    """Where the line has RecordTooLarge, the release learns the server's message limit from
    its handshake, drops the one record that exceeds it, reports it on the topic and goes on."""
    statuses = load_line(run.line).enums.build()["TopicWriterStatus"]
    if "RecordTooLarge" not in statuses.__members__:
        assert "too_large" not in run.results
        return
    result = run.check("too_large")
    assert result["statuses"] == ["active", "record_too_large", "active"]
    assert (result["final"], result["dropped"]) == ("finalized", 1)
    assert result["read_stamps"] == [BASE_NS, BASE_NS + 2 * STEP_NS]
    topic = run.snapshot["topics"][f"{name('large')}/cam"]
    assert topic["rows"] == 2
    [(kind, message)] = topic["notifications"]
    assert kind == "error" and "exceeds the transport's message-size limit" in message
