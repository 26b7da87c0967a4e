"""bastion: authorize, contain, audit and watch AI-agent tool calls."""
