"""The request log: one record per request, written off the loop, drops counted."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from app.config import LoggingSettings
from app.errors import ConfigError
from app.monitoring.batch import Batch
from app.telemetry.logging import REQUEST_COMPLETED, LineSink, configure_logging
from app.telemetry.request_log import RequestLog, payload_rows, summarize_predictions


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def test_records_are_written_by_the_background_writer() -> None:
    stream = io.StringIO()
    log = RequestLog(LoggingSettings(), on_drop=lambda n: None, sink=LineSink(stream))
    log.start()
    for i in range(5):
        log.submit(
            {"time": 0.0, "request_id": f"r{i}", "status": 200, "prediction_values": [1, 0, 1]}
        )
    assert log.flush()
    log.stop()
    lines = _lines(stream)
    assert [e["request_id"] for e in lines] == [f"r{i}" for i in range(5)]
    assert all(e["event"] == REQUEST_COMPLETED and e["level"] == "info" for e in lines)
    assert lines[0]["timestamp"] == "1970-01-01T00:00:00.000000+00:00"
    assert lines[0]["predictions"] == {"n": 3, "classes": {"1": 2, "0": 1}}
    assert log.written == 5


def test_full_queue_drops_and_counts_without_blocking() -> None:
    dropped: list[int] = []
    log = RequestLog(
        LoggingSettings(queue_size=2), on_drop=dropped.append, sink=LineSink(io.StringIO())
    )
    for i in range(5):  # writer not started: the queue fills up
        log.submit({"request_id": str(i)})
    assert sum(dropped) == 3
    assert log.dropped == 3
    log.stop(timeout=0.1)  # never started: what is left is counted as dropped
    assert log.dropped == 5


def test_stop_drains_the_queue_into_a_file_sink(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    log = RequestLog(LoggingSettings(sink=str(path)), on_drop=lambda n: None)
    log.start()
    for i in range(200):
        log.submit({"request_id": str(i), "status": 200})
    log.stop()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [str(i) for i in range(200)]
    assert {line["event"] for line in lines} == {REQUEST_COMPLETED}


def test_unopenable_file_sink_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"logging\.sink"):
        RequestLog(LoggingSettings(sink=str(tmp_path / "no" / "such" / "dir.log")), lambda n: None)


def test_disabled_request_log_writes_nothing() -> None:
    log = RequestLog(LoggingSettings(requests=False), on_drop=lambda n: None)
    log.start()
    log.submit({"request_id": "x"})
    log.stop()
    assert log.written == 0
    assert log.dropped == 0


def test_payload_sampling_rate_is_respected() -> None:
    settings = LoggingSettings(payload=True, payload_sample_rate=0.25)
    log = RequestLog(settings, lambda n: None, random.Random(1), sink=LineSink(io.StringIO()))
    share = sum(log.wants_payload() for _ in range(4000)) / 4000
    assert 0.22 < share < 0.28
    assert not RequestLog(
        LoggingSettings(), lambda n: None, sink=LineSink(io.StringIO())
    ).wants_payload()


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

    dropped: list[int] = []
    log = RequestLog(LoggingSettings(), on_drop=dropped.append, sink=LineSink(Broken()))
    log.start()
    for i in range(3):
        log.submit({"request_id": str(i)})
    log.stop()
    assert sum(dropped) == 3
    assert log.written == 0


def test_application_events_are_structured() -> None:
    configure_logging(LoggingSettings())
    with capture_logs() as logs:
        structlog.get_logger("infersight").info("sidecar.started", protocol="v2", models=["loan"])
    assert logs == [
        {"event": "sidecar.started", "log_level": "info", "protocol": "v2", "models": ["loan"]}
    ]


def test_uvicorn_and_stdlib_logs_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    configure_logging(LoggingSettings())
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:1")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "Uvicorn running on http://127.0.0.1:1"
    assert line["level"] == "info"
    assert line["logger"] == "uvicorn.error"
    assert "timestamp" in line
