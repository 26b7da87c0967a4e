"""Tests of gateway.policy_versions."""
