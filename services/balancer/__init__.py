"""The balancer: an HTTP reverse proxy routing by host and path to ready replicas."""
