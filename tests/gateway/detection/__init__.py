"""Tests of gateway.detection."""
