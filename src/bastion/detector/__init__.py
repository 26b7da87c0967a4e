"""Anomaly detection: event features, torch sequence model, streaming scorer, verdicts."""
