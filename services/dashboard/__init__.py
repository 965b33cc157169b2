"""The dashboard: a live web view of the cluster and its actions, fed by the bus."""
