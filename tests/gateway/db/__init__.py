"""Tests of gateway.db."""
