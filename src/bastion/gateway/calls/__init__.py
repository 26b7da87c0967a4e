"""The path of one tool call and its direct collaborators."""
