"""`python -m gateway` runs the `bastion` command line."""

from gateway.cli import app

app()
