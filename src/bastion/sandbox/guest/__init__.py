"""Code that runs inside the bastion.sandbox container (stdlib only, mounted read-only)."""
