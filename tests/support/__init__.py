"""Helpers shared by integration and e2e tests: brokers, service processes, bus probes."""
