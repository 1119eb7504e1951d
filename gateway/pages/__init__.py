"""The gateway's own pages on the apex host (Starlette)."""
