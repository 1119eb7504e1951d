"""Observability: in-process request statistics, the Prometheus collector, the JSON access log
and the health endpoints."""

from gateway.observability.accesslog import AccessLog, open_access_log
from gateway.observability.stats import RequestStats

__all__ = ["AccessLog", "RequestStats", "open_access_log"]
