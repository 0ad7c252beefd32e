"""structlog, configured once: JSON lines (or a console renderer), stdlib and uvicorn bridged in.

Application events go to stdout; request lines go to the configured sink through the
`infersight.requests` logger. Event names are constants; data goes in keys.
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


class DeferredFlushHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes without flushing per line; the request-log writer flushes once per batch."""

    def flush(self) -> None:
        return None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (stdlib name)
        # Re-raise so the writer counts the line as dropped instead of printing a traceback.
        raise

    def flush_now(self) -> None:
        """Flush the underlying stream."""
        super().flush()


class DeferredFlushFileHandler(logging.FileHandler, DeferredFlushHandler):
    """A file sink with the same deferred flush."""


def _open_sink(sink: str) -> DeferredFlushHandler:
    if sink == "stdout":
        return DeferredFlushHandler(sys.stdout)
    if sink == "stderr":
        return DeferredFlushHandler(sys.stderr)
    return DeferredFlushFileHandler(sink, encoding="utf-8")


def flush_request_sink() -> None:
    """Flush the request-log sink (called by the writer after each batch of lines)."""
    for handler in logging.getLogger(REQUEST_LOGGER).handlers:
        if isinstance(handler, DeferredFlushHandler):
            handler.flush_now()


def configure_logging(settings: LoggingSettings, request_stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging (idempotent; later calls replace earlier ones).

    Args:
        settings: level, format and request-log sink.
        request_stream: write request lines here instead of the configured sink (tests).
    """
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
        for logger_name in ("", REQUEST_LOGGER):
            logging.getLogger(logger_name).removeHandler(handler)
        handler.close()
    _handlers.clear()

    app_handler = logging.StreamHandler(sys.stdout)
    app_handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(app_handler)
    root.setLevel(level)
    _handlers.append(app_handler)

    req_handler = (
        DeferredFlushHandler(request_stream) if request_stream else _open_sink(settings.sink)
    )
    req_handler.setFormatter(formatter)
    req_logger = logging.getLogger(REQUEST_LOGGER)
    req_logger.addHandler(req_handler)
    req_logger.setLevel(logging.INFO)
    req_logger.propagate = False
    _handlers.append(req_handler)

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # The request line replaces uvicorn's access log.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn log config that leaves formatting to `configure_logging`."""
    return {"version": 1, "disable_existing_loggers": False}
