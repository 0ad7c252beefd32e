"""Inbound HTTP: routers and the error → status mapping."""
