"""Runnable examples of agent frameworks using bastion (each has a `main` the test suite runs)."""
