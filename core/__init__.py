"""Shoal's shared core: models, wire codec, topic map, bus client and service base.

Services import from here and never from each other (see ``DESIGN.md``).
"""

__version__ = "0.1.0"
