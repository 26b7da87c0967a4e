"""`python -m bastion` runs the `bastion` command line."""

from bastion.gateway.cli.app import app

app()
