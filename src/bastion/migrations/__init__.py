"""Alembic migrations for every bastion table."""
