"""Outbound HTTP to the model server."""
