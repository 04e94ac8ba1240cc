"""Example eSurge plugin: shortest-prompt-first scheduling."""
