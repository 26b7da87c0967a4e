"""structlog configuration: JSON in production or when piped, pretty on a terminal."""

import logging
import sys

import structlog

from bastion.gateway.telemetry.tracing import add_trace_ids


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of writing (a logger cached earlier never writes to a stream
    that was swapped out and closed since, as a test runner's capture is)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(log_format: str = "auto", level: str = "info", cache: bool = True) -> None:
    """Set up structlog; call ids bound with `bind_contextvars`, and the trace id of the current span, appear on
    every line. `cache` binds each logger on first use (the gateway's hot path); a short command leaves it off, so a
    later `configure` still applies."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
