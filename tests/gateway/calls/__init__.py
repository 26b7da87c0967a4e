"""Tests of gateway.calls."""
