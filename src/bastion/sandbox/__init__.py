"""Containment: the container runtime interface, the Docker backend, seccomp profile and executor."""
