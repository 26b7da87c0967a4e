"""Tests of gateway.audit."""
