"""Log lines in one shape, whoever writes them: the service, uvicorn, libraries.

Every module logs through the standard library (`logging.getLogger(...)`,
fields passed as `extra`); structlog's ProcessorFormatter turns each record
into `ts` (RFC 3339, UTC), `level`, `logger`, `event`, the extra fields and,
inside a request, `request_id`, then renders it as one JSON object per line
or as a readable text line. The configuration is a plain dictConfig whose
values are strings only, so that uvicorn can hand it to worker processes.
"""

import functools
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["text", "json"]

# Set by the request middleware for the time of one request; read by the log
# formatter and by problem_response.
request_id_var: ContextVar[str | None] = ContextVar("caseapi_request_id", default=None)

# uvicorn's loggers, which otherwise come with handlers and formats of their own.
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
# "uvicorn.access" is named too: dictConfig resets the children of the loggers it
# configures (propagating again), which would undo uvicorn's own switching it off.
_ACCESS = "uvicorn.access"
# httpx and httpcore say each outgoing request at INFO (webhooks, deliveries to
# peers, federated searches): those have log lines of their own where they
# matter (a failure, with the peer and the reason), so theirs only from WARNING.
_CLIENTS = ("httpx", "httpcore")


def _add_request_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    request_id = request_id_var.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes a coloured copy of its message as an extra field.
    event_dict.pop("color_message", None)
    return event_dict


# The attributes every LogRecord has; the rest of a record's attributes are
# its `extra` fields (as structlog's ExtraAdder finds them).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, with a short way for a plain record (no
    exception, no stack, no arguments): the service writes one per request,
    and the general way (a copy of the record, a chain of processors, the
    console renderer's columns) cost as much as a third of a cached read.
    The short way builds the event dict the chain would, key for key in the
    same order, and writes it as the renderer would (the JSON renderer
    itself; the text line by _text_line, only for plain values)
    — tests/observability/test_logs.py compares both ways."""

    def __init__(self, *args: Any, text: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._text = text

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.stack_info or record.args or hasattr(record, "_logger"):
            return super().format(record)
        event: dict[str, Any] = {
            "event": str(record.msg),
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                event[key] = value
        event.pop("color_message", None)
        request_id = request_id_var.get()
        if request_id is not None:
            event.setdefault("request_id", request_id)
        if self._text and (line := _text_line(event)) is not None:
            return line
        rendered: Any = event
        for processor in self.processors:
            if processor is not structlog.stdlib.ProcessorFormatter.remove_processors_meta:
                rendered = processor(None, event["level"], rendered)
        return str(rendered)


_PLAIN = (str, int, float, bool, type(None))
_QUOTED = frozenset(" \t=\r\n\"'")


_HEAD = ("ts", "level", "event", "logger")


def _text_line(event: dict[str, Any]) -> str | None:
    """The console renderer's line (colors off, no padding of the event) for
    an event whose values are all plain; None for any other."""
    parts = [f"{event['ts']} [{event['level']:<9}] {event['event']} [{event['logger']}]"]
    for key in sorted(event):
        if key in _HEAD:
            continue
        value = event[key]
        if type(value) not in _PLAIN:
            return None
        shown = value if isinstance(value, str) and not _QUOTED.intersection(value) else repr(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def formatter(log_format: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    """The formatter every handler uses (named by the dictConfig below)."""
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        # The plain traceback: the default one prints every frame's local
        # variables, which may hold keys and personal data.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False,
            timestamp_key="ts",
            exception_formatter=structlog.dev.plain_traceback,
            pad_event_to=0,
        )
        tail = [renderer]
    return _Formatter(
        text=log_format == "text",
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
            _add_request_id,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )


def logging_config(log_format: LogFormat, level: str, access_log: bool) -> dict[str, Any]:
    """A logging.config.dictConfig for the whole process, uvicorn's loggers included;
    uvicorn's line per request only with `access_log`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"caseapi": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "caseapi", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            **{name: {"handlers": [], "propagate": True, "level": level} for name in _UVICORN},
            _ACCESS: {"handlers": [], "propagate": access_log, "level": level},
            **{name: {"handlers": [], "propagate": True, "level": "WARNING"} for name in _CLIENTS},
        },
    }


@functools.cache  # once per process and configuration: tests build many apps
def configure_logging(log_format: LogFormat, level: str, access_log: bool) -> None:
    logging.config.dictConfig(logging_config(log_format, level, access_log))
    # No format prints a record's thread, process or source line: not
    # looking them up makes every record cheaper (the stack walk most).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
