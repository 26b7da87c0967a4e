"""Tests of gateway.cli."""
