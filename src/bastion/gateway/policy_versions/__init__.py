"""Stored bastion.policy versions and their life cycle."""
