"""Principals: agents and admins, their keys, roles and labels."""
