"""structlog, configured once: JSON lines (or a console renderer), stdlib and uvicorn bridged in.

Application events go to stdout through stdlib logging (so uvicorn's lines are JSON too);
request lines go to their own sink through a lean structlog logger. Event names are
constants; data goes in keys.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from app.config import LoggingSettings

REQUEST_COMPLETED = "request.completed"
REQUEST_LOGGER = "infersight.requests"

_handlers: list[logging.Handler] = []


def _timestamp_if_absent(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Request lines carry the request's own time; other events get the time they were logged.
    if "timestamp" not in event_dict:
        from datetime import UTC, datetime

        event_dict["timestamp"] = datetime.now(UTC).isoformat(timespec="microseconds")
    return event_dict


def _orjson_dumps(obj: Any, **_: Any) -> str:
    try:
        return orjson.dumps(obj, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. integers beyond 64 bits in logged payloads
        import json

        return json.dumps(obj, default=repr)


def _renderer(fmt: str) -> Processor:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer(serializer=_orjson_dumps)


class LineSink:
    """The request-log sink: a text stream written line by line and flushed once per batch.

    It is the wrapped logger of the request logger (structlog calls `msg` with the rendered
    line); a write error propagates so the writer can count the line as dropped.
    """

    def __init__(self, stream: TextIO, owned: bool = False) -> None:
        self.stream = stream
        self.owned = owned

    def msg(self, message: str) -> None:
        self.stream.write(message + "\n")

    info = msg

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


def open_request_sink(sink: str, stream: TextIO | None = None) -> LineSink:
    """`stdout`, `stderr` or a file path (appended to); `stream` overrides it (tests)."""
    if stream is not None:
        return LineSink(stream)
    if sink == "stdout":
        return LineSink(sys.stdout)
    if sink == "stderr":
        return LineSink(sys.stderr)
    return LineSink(open(sink, "a", encoding="utf-8"), owned=True)


def _request_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("level", "info")
    return event_dict


def request_logger(sink: LineSink) -> Any:
    """A lean structlog logger for request lines: no stdlib round trip, orjson rendering
    (about 3 µs a line instead of about 50 µs through logging handlers)."""
    return structlog.wrap_logger(
        sink,
        processors=[
            _request_timestamp,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )


def configure_logging(settings: LoggingSettings) -> None:
    """Configure structlog and stdlib logging (idempotent; later calls replace earlier ones)."""
    level = getattr(logging, settings.level.upper())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _timestamp_if_absent,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _renderer(settings.format),
        ],
    )
    for handler in _handlers:
        logging.getLogger().removeHandler(handler)
        handler.close()
    _handlers.clear()

    app_handler = logging.StreamHandler(sys.stdout)
    app_handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(app_handler)
    root.setLevel(level)
    _handlers.append(app_handler)

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.NOTSET)  # follow the configured level
    # The request line replaces uvicorn's access log.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn log config that leaves formatting to `configure_logging`."""
    return {"version": 1, "disable_existing_loggers": False}
