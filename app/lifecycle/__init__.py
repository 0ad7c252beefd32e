"""Model lifecycle: served versions, shadow candidates, parity probes, the ML Test Score."""
