"""The ``shoal`` command: a bus client for users, and the ``up`` supervisor."""
