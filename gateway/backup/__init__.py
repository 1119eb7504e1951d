"""Continuous replication and point-in-time restore of every database (Litestream 0.5)."""

from gateway.backup.supervisor import Replication

__all__ = ["Replication"]
