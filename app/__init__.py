"""InferSight: a monitoring sidecar for ML model servers."""

__version__ = "0.1.0"
