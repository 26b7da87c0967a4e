"""The tools agents call: built-ins, admin-registered custom tools, the catalogue."""
