"""The request log: one record per request, written off the loop, drops counted."""

from __future__ import annotations

import io
import json

from structlog.testing import capture_logs

from app.config import LoggingSettings
from app.monitoring.batch import Batch
from app.telemetry.logging import REQUEST_COMPLETED, configure_logging
from app.telemetry.request_log import RequestLog, payload_rows, summarize_predictions


def test_records_are_written_by_the_background_writer() -> None:
    configure_logging(LoggingSettings())
    log = RequestLog(LoggingSettings(), on_drop=lambda n: None)
    log.start()
    with capture_logs() as logs:
        for i in range(5):
            log.submit(
                {"time": 0.0, "request_id": f"r{i}", "status": 200, "prediction_values": [1, 0, 1]}
            )
        assert log.flush()
        log.stop()
    assert [e["request_id"] for e in logs] == [f"r{i}" for i in range(5)]
    assert all(e["event"] == REQUEST_COMPLETED for e in logs)
    assert logs[0]["timestamp"] == "1970-01-01T00:00:00.000000+00:00"
    assert logs[0]["predictions"] == {"n": 3, "classes": {"1": 2, "0": 1}}
    assert log.written == 5


def test_full_queue_drops_and_counts_without_blocking() -> None:
    dropped: list[int] = []
    log = RequestLog(LoggingSettings(queue_size=2), on_drop=dropped.append)
    for i in range(5):  # writer not started: the queue fills up
        log.submit({"request_id": str(i)})
    assert sum(dropped) == 3
    assert log.dropped == 3
    log.stop(timeout=0.1)  # never started: what is left is counted as dropped
    assert log.dropped == 5


def test_stop_drains_the_queue_into_the_sink() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(), request_stream=stream)
    log = RequestLog(LoggingSettings(), on_drop=lambda n: None)
    log.start()
    for i in range(200):
        log.submit({"request_id": str(i), "status": 200})
    log.stop()
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [str(i) for i in range(200)]
    assert {line["event"] for line in lines} == {REQUEST_COMPLETED}
    configure_logging(LoggingSettings())


def test_disabled_request_log_writes_nothing() -> None:
    log = RequestLog(LoggingSettings(requests=False), on_drop=lambda n: None)
    log.start()
    log.submit({"request_id": "x"})
    log.stop()
    assert log.written == 0
    assert log.dropped == 0


def test_payload_sampling_rate_is_respected() -> None:
    import random

    log = RequestLog(
        LoggingSettings(payload=True, payload_sample_rate=0.25), lambda n: None, random.Random(1)
    )
    share = sum(log.wants_payload() for _ in range(4000)) / 4000
    assert 0.22 < share < 0.28
    assert not RequestLog(LoggingSettings(), lambda n: None).wants_payload()


def test_summaries_and_redaction() -> None:
    assert summarize_predictions([0.5, 1.5]) == {"n": 2, "mean": 1.0, "min": 0.5, "max": 1.5}
    assert summarize_predictions(["a", "b", "a"]) == {"n": 3, "classes": {"a": 2, "b": 1}}
    assert summarize_predictions([]) is None
    nan = summarize_predictions([float("nan"), 1.0])
    assert nan is not None
    assert nan["classes"] == {"nan": 1, "1.0": 1}
    batch = Batch(3, {"a": [1, 2, 3], "secret": ["x", "y", "z"]})
    assert payload_rows(batch, 2, frozenset({"secret"})) == [
        {"a": 1, "secret": "[redacted]"},
        {"a": 2, "secret": "[redacted]"},
    ]


def test_a_failing_sink_counts_dropped_lines() -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("disk full")

    configure_logging(LoggingSettings(), request_stream=Broken())
    dropped: list[int] = []
    log = RequestLog(LoggingSettings(), on_drop=dropped.append)
    log.start()
    for i in range(3):
        log.submit({"request_id": str(i)})
    log.stop()
    assert sum(dropped) == 3
    assert log.written == 0
    configure_logging(LoggingSettings())
