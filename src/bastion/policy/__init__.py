"""Authorization: the Rego engine interface, its backends, and the bundled default policies."""
