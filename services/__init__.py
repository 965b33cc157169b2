"""Shoal's services. Each package is independent: it talks to the others only over the bus."""
