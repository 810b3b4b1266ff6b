"""Drive one installed mosaicolabs release against a running server and print what it saw.

Run in a subprocess whose PYTHONPATH starts with one release's directory (see `install.py`):

    python tests/sdks/drive.py '{"host": "127.0.0.1", "port": 6726, "prefix": "r043"}'

Optional keys of the argument: "keys" (a permission name -> token map, for the key checks; a
"manage" token for the key actions where the release has them) and "large_record_bytes" (the
size of a record too large for the server's limits, pushed where the release reports such a
record with TopicWriterStatus.RecordTooLarge). Every check runs, whatever the
others did, and prints as one JSON object on stdout: {check: {"ok": bool, ...facts}}. A check
that raised carries "error" (the exception's class and text). The test that runs this module
asserts on the facts and compares them with the server's own state. It uses only what every
release 0.3-0.7 has in common, and asks a release for a feature (`sequence_update`,
`api_key_create`) by looking it up, never by its version.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import mosaicolabs as sdk
from mosaicolabs import (
    GPS,
    IMU,
    CompressedImage,
    GPSStatus,
    ImageFormat,
    Message,
    MosaicoClient,
    Point3d,
    QueryOntologyCatalog,
    QuerySequence,
    QueryTopic,
    SessionLevelErrorPolicy,
    TopicLevelErrorPolicy,
    TopicWriterStatus,
    Vector3d,
)

BASE_NS = 1_700_000_000_000_000_000
STEP_NS = 10_000_000
ROWS = 5


def stamp(i: int) -> int:
    return BASE_NS + i * STEP_NS


def imu(i: int) -> IMU:
    return IMU(
        acceleration=Vector3d(x=0.5 * i, y=-1.25, z=9.81),
        angular_velocity=Vector3d(x=0.01 * i, y=0.02, z=-0.03),
    )


def gps(i: int) -> GPS:
    return GPS(
        position=Point3d(x=45.0 + i * 1e-5, y=9.19, z=120.5 + i),
        status=GPSStatus(status=1, service=2, satellites=8 + i),
    )


def _status(value: Any) -> Any:
    return getattr(value, "value", value)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


class Driver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.host = config["host"]
        self.port = int(config["port"])
        self.prefix = config["prefix"]
        self.keys: dict[str, str] = config.get("keys", {})
        self.config_large = config.get("large_record_bytes", 0)
        self.results: dict[str, dict[str, Any]] = {}
        self.client: MosaicoClient | None = None

    def name(self, what: str) -> str:
        return f"{self.prefix}_{what}"

    def check(self, name: str, body: Callable[[], dict[str, Any]]) -> None:
        try:
            facts = body()
            self.results[name] = {"ok": True, **facts}
        except BaseException as exc:  # every failure is reported, none stops the run
            self.results[name] = {
                "ok": False,
                "error": _error(exc),
                "trace": traceback.format_exc()[-1500:],
            }

    def connect(self, key: str | None = None) -> MosaicoClient:
        if key is None:
            return MosaicoClient.connect(host=self.host, port=self.port)
        return MosaicoClient.connect(host=self.host, port=self.port, api_key=key)

    # ------------------------------------------------------------------------------------------

    def do_connect(self) -> dict[str, Any]:
        self.client = self.connect(self.keys.get("manage"))
        return {"sdk": getattr(sdk, "__version__", None)}

    def do_write(self) -> dict[str, Any]:
        assert self.client is not None
        seq = self.name("run")
        with self.client.sequence_create(seq, {"kind": "drive", "n": 1}) as writer:
            first = writer.topic_create("imu/front", {"side": "front"}, IMU)
            second = writer.topic_create("imu/rear", {"side": "rear"}, IMU)
            third = writer.topic_create("gps", {}, GPS)
            assert first is not None and second is not None and third is not None
            for i in range(ROWS):
                first.push(Message(timestamp_ns=stamp(i), data=imu(i)))
                second.push(Message(timestamp_ns=stamp(i) + 1, data=imu(i + 100)))
                third.push(Message(timestamp_ns=stamp(i), data=gps(i)))
        return {
            "sequence": seq,
            "status": _status(writer.status),
            "topics": [_status(t.status) for t in (first, second, third)],
        }

    def _read(self, seq: str, topic: str) -> list[Any]:
        assert self.client is not None
        handler = self.client.topic_handler(seq, topic)
        assert handler is not None, f"no topic handler for {seq}/{topic}"
        return list(handler.get_data_streamer())

    def do_read(self) -> dict[str, Any]:
        seq = self.name("run")
        front = self._read(seq, "imu/front")
        rear = self._read(seq, "imu/rear")
        fixes = self._read(seq, "gps")
        return {
            "front_stamps": [m.timestamp_ns for m in front],
            "front_equal": [m.data for m in front] == [imu(i) for i in range(ROWS)],
            "rear_equal": [m.data for m in rear] == [imu(i + 100) for i in range(ROWS)],
            "rear_stamps": [m.timestamp_ns for m in rear],
            "gps_equal": [m.data for m in fixes] == [gps(i) for i in range(ROWS)],
        }

    def do_list(self) -> dict[str, Any]:
        assert self.client is not None
        return {"sequences": sorted(self.client.list_sequences())}

    def do_query(self) -> dict[str, Any]:
        assert self.client is not None
        seq = self.name("run")
        by_name = self.client.query(QuerySequence().with_name(seq))
        by_topic = self.client.query(QueryTopic().with_name("imu/front"))
        missing = self.client.query(QuerySequence().with_name(self.name("absent")))

        def items(response: Any) -> list[tuple[str, list[str]]]:
            if response is None:
                return []
            return sorted(
                (item.sequence.name, sorted(t.name for t in item.topics)) for item in response
            )

        return {"by_name": items(by_name), "by_topic": items(by_topic), "none": items(missing)}

    def do_data_query(self) -> dict[str, Any]:
        """A query on the stored data (the release spells the ontology tag its own way), and
        the streaming filter actions on its answer where the release has them."""
        assert self.client is not None
        seq = self.name("run")
        high = self.client.query(
            QueryOntologyCatalog().with_expression(IMU.Q.acceleration.x.gt(10.0))
        )
        some = self.client.query(
            QueryOntologyCatalog().with_expression(IMU.Q.acceleration.x.gt(1.0))
        )
        assert high is not None and some is not None
        facts: dict[str, Any] = {
            "high": sorted(t.name.lstrip("/") for item in high for t in item.topics),
            "some": sorted(t.name.lstrip("/") for item in some for t in item.topics),
            "sequences": sorted({item.sequence.name for item in some}),
        }
        topics = {t.name.lstrip("/"): t for item in some for t in item.topics}
        rear, front = topics["imu/rear"], topics["imu/front"]
        if hasattr(rear, "clusterize"):

            def spans(clusters: Any) -> list[list[int]]:
                return [[c.timerange.start, c.timerange.end] for c in clusters]

            facts["clusters_whole"] = spans(rear.clusterize())
            facts["clusters_split"] = spans(rear.clusterize(clustering_dt_ns=STEP_NS // 2))
            facts["intersect"] = spans(front.intersect(rear))
        assert seq in facts["sequences"]
        return facts

    def do_report_policy(self) -> dict[str, Any]:
        """An exception under Report: the error propagates, the session is finalized with a
        notification on the sequence and on each topic."""
        assert self.client is not None
        seq = self.name("report")
        raised = None
        writer = self.client.sequence_create(seq, {}, on_error=SessionLevelErrorPolicy.Report)
        try:
            with writer:
                topic = writer.topic_create("imu", {}, IMU)
                assert topic is not None
                topic.push(Message(timestamp_ns=stamp(0), data=imu(0)))
                raise RuntimeError("report me")
        except RuntimeError as exc:
            raised = str(exc)
        return {"sequence": seq, "raised": raised, "status": _status(writer.status)}

    def do_delete_policy(self) -> dict[str, Any]:
        """An exception under Delete: the new sequence is purged."""
        assert self.client is not None
        seq = self.name("delete")
        raised = None
        writer = self.client.sequence_create(seq, {}, on_error=SessionLevelErrorPolicy.Delete)
        try:
            with writer:
                topic = writer.topic_create("imu", {}, IMU)
                assert topic is not None
                topic.push(Message(timestamp_ns=stamp(0), data=imu(0)))
                raise RuntimeError("delete me")
        except Exception as exc:
            raised = _error(exc)
        return {
            "sequence": seq,
            "raised": raised,
            "status": _status(writer.status),
            "listed": seq in self.client.list_sequences(),
        }

    def do_topic_policy(self) -> dict[str, Any]:
        """A topic under Finalize absorbs its exception; the other topic and the session go on."""
        assert self.client is not None
        seq = self.name("topicpol")
        with self.client.sequence_create(seq, {}) as writer:
            failing = writer.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Finalize)
            healthy = writer.topic_create("gps", {}, GPS)
            assert failing is not None and healthy is not None
            with failing:
                failing.push(Message(timestamp_ns=stamp(0), data=imu(0)))
                raise ValueError("bad record")
            healthy.push(Message(timestamp_ns=stamp(0), data=gps(0)))
        return {
            "sequence": seq,
            "status": _status(writer.status),
            "failing": _status(failing.status),
            "healthy": _status(healthy.status),
            "gps_rows": len(self._read(seq, "gps")),
        }

    def do_topic_ignore(self) -> dict[str, Any]:
        """A topic under Ignore absorbs its exception and keeps writing."""
        assert self.client is not None
        seq = self.name("topicign")
        with self.client.sequence_create(seq, {}) as writer:
            topic = writer.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Ignore)
            assert topic is not None
            with topic:
                topic.push(Message(timestamp_ns=stamp(0), data=imu(0)))
                topic.push(Message(timestamp_ns=stamp(1), data=imu(1)))
                raise ValueError("ignored record")
            after_error = _status(topic.status)
            topic.push(Message(timestamp_ns=stamp(2), data=imu(2)))
            after_push = _status(topic.status)
        return {
            "sequence": seq,
            "status": _status(writer.status),
            "after_error": after_error,
            "after_push": after_push,
            "final": _status(topic.status),
            "read_stamps": [m.timestamp_ns for m in self._read(seq, "imu")],
        }

    def do_topic_raise(self) -> dict[str, Any]:
        """A topic under Raise lets its exception leave the block: the session reports."""
        assert self.client is not None
        seq = self.name("topicraise")
        raised = None
        writer = self.client.sequence_create(seq, {})
        try:
            with writer:
                topic = writer.topic_create("imu", {}, IMU, on_error=TopicLevelErrorPolicy.Raise)
                assert topic is not None
                with topic:
                    topic.push(Message(timestamp_ns=stamp(0), data=imu(0)))
                    raise ValueError("raised record")
        except ValueError as exc:
            raised = str(exc)
        return {
            "sequence": seq,
            "raised": raised,
            "status": _status(writer.status),
            "final": _status(topic.status),
        }

    def do_add_session(self) -> dict[str, Any]:
        """A second session on the written sequence: through the sequence's handler, and
        through client.sequence_update where the release has it."""
        assert self.client is not None
        seq = self.name("run")
        handler = self.client.sequence_handler(seq)
        assert handler is not None
        with handler.update() as updater:
            topic = updater.topic_create("extra", {}, IMU)
            assert topic is not None
            topic.push(Message(timestamp_ns=stamp(0), data=imu(7)))
        facts: dict[str, Any] = {"update_status": _status(updater.session_status)}
        if hasattr(self.client, "sequence_update"):
            # On a sequence of its own: its trace is checked apart from the handler's.
            direct_seq = self.name("direct")
            with self.client.sequence_create(direct_seq, {}) as first:
                base = first.topic_create("base", {}, GPS)
                assert base is not None
                base.push(Message(timestamp_ns=stamp(0), data=gps(0)))
            with self.client.sequence_update(direct_seq) as direct:
                more = direct.topic_create("extra2", {}, GPS)
                assert more is not None
                more.push(Message(timestamp_ns=stamp(0), data=gps(3)))
            facts["sequence_update_status"] = _status(direct.session_status)
            facts["direct_extra_equal"] = [m.data for m in self._read(direct_seq, "extra2")] == [
                gps(3)
            ]
        facts["extra_equal"] = [m.data for m in self._read(seq, "extra")] == [imu(7)]
        return facts

    def do_too_large(self) -> dict[str, Any]:
        """A record larger than the batch limit the server's info allows, between two small
        ones (where the release has RecordTooLarge)."""
        assert self.client is not None
        seq = self.name("large")
        size = int(self.config_large)
        statuses = []
        with self.client.sequence_create(seq, {}) as writer:
            topic = writer.topic_create("cam", {}, CompressedImage)
            assert topic is not None
            for i, length in enumerate((100, size, 100)):
                image = CompressedImage(data=bytes([i + 1]) * length, format=ImageFormat.JPEG)
                topic.push(Message(timestamp_ns=stamp(i), data=image))
                statuses.append(_status(topic.status))
        return {
            "sequence": seq,
            "statuses": statuses,
            "final": _status(topic.status),
            "dropped": topic.dropped_record_count,
            "read_stamps": [m.timestamp_ns for m in self._read(seq, "cam")],
        }

    def do_keys(self) -> dict[str, Any]:
        """With authentication on: a read key reads and is refused a write; the key actions
        where the release has them."""
        read_key = self.keys["read"]
        facts: dict[str, Any] = {}
        reader = self.connect(read_key)
        try:
            facts["read_lists"] = self.name("run") in reader.list_sequences()
            refused = None
            writer = reader.sequence_create(self.name("refused"), {})
            try:
                with writer:
                    pass
            except Exception as exc:
                refused = type(exc).__name__
            facts["write_refused"] = refused
        finally:
            reader.close()
        assert self.client is not None
        if hasattr(self.client, "api_key_create"):
            permission = sdk.enum.APIKeyPermissionEnum.Read
            token = self.client.api_key_create(permission, "made by the driver")
            assert token is not None
            status = self.client.api_key_status(token[-8:])
            facts["created_description"] = status.description if status else None
            self.client.api_key_revoke(token[-8:])
            facts["revoked"] = True
        return facts

    def run(self, with_keys: bool) -> dict[str, dict[str, Any]]:
        self.check("connect", self.do_connect)
        if self.client is None:
            return self.results
        for name, body in (
            ("write", self.do_write),
            ("read", self.do_read),
            ("list", self.do_list),
            ("query", self.do_query),
            ("data_query", self.do_data_query),
            ("report_policy", self.do_report_policy),
            ("delete_policy", self.do_delete_policy),
            ("topic_policy", self.do_topic_policy),
            ("topic_ignore", self.do_topic_ignore),
            ("topic_raise", self.do_topic_raise),
            ("add_session", self.do_add_session),
        ):
            self.check(name, body)
        if with_keys:
            self.check("keys", self.do_keys)
        if self.config_large and hasattr(TopicWriterStatus, "RecordTooLarge"):
            self.check("too_large", self.do_too_large)
        self.client.close()
        return self.results


def main() -> int:
    config = json.loads(sys.argv[1])
    results = Driver(config).run(with_keys=bool(config.get("keys")))
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
