"""Prometheus metrics, structlog configuration and the request-log queue."""
