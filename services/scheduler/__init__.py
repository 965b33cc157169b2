"""The scheduler: places every app's replicas on nodes and writes each node's assignment.

Pure placement logic lives in ``model``, ``checks``, ``scorers``, ``placement`` and
``cluster``; leader election is ``core.election`` (shared with the scaler); ``service``
wires it to the bus.
"""
