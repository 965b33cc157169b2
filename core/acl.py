"""The broker's password file and ACL, generated from the cluster's identities.

``acl_text(auth)`` renders a mosquitto ``acl_file``: one ``user`` block per identity, every
line derived from the contract (``core.channels``), so the topics an identity may write are
exactly those the contract says it writes:

- every identity: its own command topics ``cmd/+/<user>`` (what it may *ask* is decided by
  the answerer, per namespace and verb: ``core.identities.authorize``) and its own reply
  topics ``reply/<user>/#``, readable by nobody else;
- a service: reads every channel (not other users' replies); writes what the contract gives
  its role; the answerers of commands (controller, scheduler, dashboard) read ``cmd/#`` and
  write ``reply/#``;
- a node's agent: reads only its own assignment, its own report, ``logs/request`` and
  ``health/#``; writes only its own ``nodes/<node>/...`` and ``metrics/nodes/<node>``,
  log streams and events;
- a user: reads the cluster's state, writes ``logs/request``, and nothing retained;
- a region's ``bridge`` (a region broker logged in to the home one): reads everything,
  writes what the region's agents, services and users write (``BRIDGE_WRITES``).

``password_file(auth)`` is the ``password_file`` mosquitto reads (``user:$7$...``).
No ``pattern`` lines: nothing applies to a user the file does not name, and the broker must
refuse anonymous clients (``allow_anonymous false``; see the README).
"""

from __future__ import annotations

from typing import Any

from core.channels import (
    ACME_CHALLENGES,
    APPS,
    CHANNELS,
    EVENTS,
    HEALTH,
    LB_METRICS,
    LOGS_REQUEST,
    LOGS_STREAM,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    NODE_METRICS,
    NODE_REPLICAS,
    PRESENCE,
    SCALER_STATUS,
    SCHEDULER_STATUS,
    WAKE,
    Channel,
    check_prefix,
    level,
)
from core.identities import AuthFile, Identity
from core.paging import page_pattern
from core.topics import matches

#: What each service role writes besides its presence and events (the contract's writers).
SERVICE_WRITES: dict[str, tuple[Channel[Any, Any], ...]] = {
    "controller": (APPS,),
    "scheduler": (NODE_ASSIGN, NODE_CORDON, SCHEDULER_STATUS),
    "health": (HEALTH,),
    "balancer": (LB_METRICS, WAKE, ACME_CHALLENGES),
    "scaler": (SCALER_STATUS,),
    "dashboard": (LOGS_REQUEST,),
    "mesh": (),
    # clears the retained info and report of a node it removed (its agent is gone), as the
    # Kubernetes cluster autoscaler deletes the Node object
    "provisioner": (NODE_INFO, NODE_REPLICAS),
}
#: What a region's bridge (its broker logging in to the home broker) carries from the region
#: to home: what the region's agents and services write (``configs/mosquitto-bridge.conf``,
#: every topic bridged ``out`` or ``both``), besides commands, replies and presence.
BRIDGE_WRITES: tuple[Channel[Any, Any], ...] = (
    NODE_INFO,
    NODE_REPLICAS,
    ACME_CHALLENGES,
    EVENTS,
    LB_METRICS,
    NODE_METRICS,
    WAKE,
    LOGS_REQUEST,
    LOGS_STREAM,
)
#: Roles that answer commands: they read requests and write any user's reply topic.
ANSWERERS = ("controller", "scheduler", "dashboard")
#: What a user reads: the cluster's state (not commands, not other users' replies).
USER_READS: tuple[Channel[Any, Any], ...] = (
    APPS,
    NODE_INFO,
    NODE_ASSIGN,
    NODE_REPLICAS,
    NODE_CORDON,
    SCHEDULER_STATUS,
    HEALTH,
    SCALER_STATUS,
    LB_METRICS,
    NODE_METRICS,
    LOGS_STREAM,
    EVENTS,
    PRESENCE,
)


def topic_rules(auth: AuthFile, user: str, identity: Identity) -> list[tuple[str, str]]:
    """(access, topic filter) pairs for one identity, access being read or write; a rule
    on a paged channel's topic covers its pages too (``core.paging``)."""
    p = check_prefix(auth.prefix)
    paged = [c.pattern(p) for c in CHANNELS if c.paged]
    rules: list[tuple[str, str]] = []
    for access, topic in _rules(p, user, identity):
        rules.append((access, topic))
        if not topic.endswith("#") and any(matches(c, topic) for c in paged):
            rules.append((access, page_pattern(topic)))
    return rules


def _rules(p: str, user: str, identity: Identity) -> list[tuple[str, str]]:
    rules: list[tuple[str, str]] = [
        ("write", f"{p}/cmd/+/{level(user)}"),
        ("readwrite", f"{p}/reply/{user}/#"),
    ]
    role = identity.role
    if role == "user":
        rules += [("read", c.pattern(p)) for c in USER_READS]
        rules.append(("write", LOGS_REQUEST.pattern(p)))
        return rules
    if role == "bridge":
        # a region's broker: everything home has goes out to the region; from the region
        # comes what its own agents, services and users write (commands and replies of
        # anyone: the answerer still checks each command's user level)
        rules = [("read", f"{p}/#"), ("write", f"{p}/cmd/#"), ("write", f"{p}/reply/#")]
        rules += [("write", c.pattern(p)) for c in BRIDGE_WRITES]
        rules.append(("write", f"{p}/services/#"))
        return rules
    rules.append(("write", EVENTS.pattern(p)))
    if role == "agent":
        node = level(identity.node or "")
        rules += [
            ("read", NODE_ASSIGN.topic(p, node)),
            ("readwrite", NODE_REPLICAS.topic(p, node)),
            ("read", LOGS_REQUEST.pattern(p)),
            ("read", HEALTH.pattern(p)),
            ("write", NODE_INFO.topic(p, node)),
            ("write", NODE_METRICS.topic(p, node)),
            ("write", LOGS_STREAM.pattern(p)),
            ("write", PRESENCE.pattern(p, service="agent")),
        ]
        return rules
    rules += [("read", c.pattern(p)) for c in CHANNELS]
    rules += [("write", c.pattern(p)) for c in SERVICE_WRITES[role]]
    rules.append(("write", PRESENCE.pattern(p, service=role)))
    if role in ANSWERERS:
        rules += [("read", f"{p}/cmd/#"), ("write", f"{p}/reply/#")]
    return rules


def acl_text(auth: AuthFile) -> str:
    """The mosquitto ``acl_file`` for every identity."""
    lines = [
        "# Generated by `shoal auth acl` from the cluster's identities file: do not edit;",
        "# change the identities with `shoal auth ...` and generate it again.",
    ]
    for user in sorted(auth.identities):
        identity = auth.identities[user]
        what = identity.role + (f" of node {identity.node}" if identity.node else "")
        lines += ["", f"# {what}{' (admin)' if identity.admin else ''}", f"user {user}"]
        lines += [f"topic {access} {topic}" for access, topic in topic_rules(auth, user, identity)]
    return "\n".join(lines) + "\n"


def password_file(auth: AuthFile) -> str:
    """The mosquitto ``password_file``: ``user:hash`` per identity."""
    return "".join(f"{u}:{auth.identities[u].password_hash}\n" for u in sorted(auth.identities))
