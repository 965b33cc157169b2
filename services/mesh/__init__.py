"""The mesh: per node, names, VIPs and relays for traffic between the cluster's containers."""
