"""Policy engine backends: one module per backend behind `PolicyEngine`."""
