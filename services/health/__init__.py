"""The health monitor: probes replicas and publishes per-app readiness (``health/<ns>/<app>``)."""
