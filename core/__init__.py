"""Shoal's shared core: models, the bus contract, wire codec, bus client and service base.

Services import from here and never from each other (see ``core/README.md``).
"""

__version__ = "0.1.0"
