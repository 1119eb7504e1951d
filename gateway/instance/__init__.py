"""Files that run *inside* a team's Datasette instance (process or container), not the gateway."""
