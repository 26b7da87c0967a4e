"""OpenTelemetry tracing: the gateway's tracer, the process's tracer provider, and trace ids on log lines.

`bastion serve` installs an SDK tracer provider, so every call has a trace id that its log lines carry; spans are
exported over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, or as
`OTEL_TRACES_EXPORTER` names (`otlp`, `console`, `none`). `OTEL_SDK_DISABLED=true` turns tracing off."""

import os
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

tracer = trace.get_tracer("bastion.gateway")
"""The gateway's tracer: a proxy that follows whichever provider the process installs (none: spans are no-ops)."""


def configure_tracing(service_name: str = "bastion-gateway") -> "TracerProvider | None":
    """Install the process's tracer provider from the OTEL_* environment; None when tracing is disabled. (The SDK
    is imported here: commands that do not serve never load it.)"""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _exporters() -> "list[SpanExporter]":
    """The span exporters the environment asks for."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    named = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    names = {name.strip() for name in named.split(",") if name.strip()} or ({"otlp"} if endpoint else set())
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's trace and span ids on every line logged inside it."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
