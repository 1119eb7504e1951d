"""Routing: RouteTable (host -> service) -> Service -> LoadBalancer -> Target."""

from gateway.routing.balancer import LoadBalancer
from gateway.routing.service import Service
from gateway.routing.table import RouteTable, normalize_host
from gateway.routing.target import State, Target

__all__ = ["LoadBalancer", "RouteTable", "Service", "State", "Target", "normalize_host"]
