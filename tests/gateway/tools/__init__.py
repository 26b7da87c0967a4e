"""Tests of gateway.tools."""
