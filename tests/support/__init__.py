"""Helpers the tests share: real gateways, events, attack snippets, policy and egress fixtures."""
