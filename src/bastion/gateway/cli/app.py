"""The `bastion` command line: one module per command group, put together here."""

import typer

from bastion.gateway.cli.agents import agents_app
from bastion.gateway.cli.approvals import approvals_app
from bastion.gateway.cli.audit import audit_app
from bastion.gateway.cli.demo import demo
from bastion.gateway.cli.detector import detector_app
from bastion.gateway.cli.mcp_stdio import mcp_stdio
from bastion.gateway.cli.operators import operators_app
from bastion.gateway.cli.policy import policy_app
from bastion.gateway.cli.serve import migrate, serve, setup
from bastion.gateway.logging import configure_logging

app = typer.Typer(help="bastion: authorize, contain, audit and watch AI-agent tool calls.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(agents_app, name="agents")
app.add_typer(approvals_app, name="approvals")
app.add_typer(detector_app, name="detector")
app.add_typer(operators_app, name="operators")
app.add_typer(policy_app, name="policy")
for command in (serve, setup, migrate, demo):
    app.command()(command)
app.command("mcp-stdio")(mcp_stdio)


@app.callback()
def quiet_logs() -> None:
    """Commands log only warnings and errors (`bastion serve` sets its own level from BASTION_LOG_LEVEL)."""
    configure_logging("auto", "warning", cache=False)
