"""The scheduler: places every app's replicas on nodes and writes each node's assignment.

Pure placement logic lives in ``model``, ``checks``, ``scorers``, ``placement``, ``cluster``
and ``election``; ``service`` wires it to the bus.
"""
