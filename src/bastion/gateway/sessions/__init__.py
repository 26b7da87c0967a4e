"""Agent sessions: their rows and their live view."""
