"""What a gateway tells operators about itself: Prometheus metrics (`metrics`, served at `GET /metrics`) and
OpenTelemetry spans with trace ids on log lines (`tracing`)."""
