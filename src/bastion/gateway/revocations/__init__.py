"""Revocations: their rows, and the enforcer that puts them and the bastion.detector's responses in force."""
