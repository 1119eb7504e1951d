"""Where targets come from: local processes (the embedded default) or Docker containers."""
