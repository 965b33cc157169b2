"""The identities file and the authorisation decisions (pure)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from core.identities import (
    AuthError,
    AuthFile,
    Identity,
    add_identity,
    authorize,
    authorize_secret_values,
    dump_auth,
    grant,
    hash_password,
    parse_auth,
    password_matches,
    remove_identity,
    revoke,
)

H = "$7$101$AAAAAAAAAAAAAAAA$AAAA"


def user(**fields: object) -> Identity:
    return Identity.model_validate({"role": "user", "password_hash": H, **fields})


AUTH = AuthFile(
    identities={
        "alice": user(grants={"test": ["*"]}),
        "carol": user(grants={"prod": ["history", "scale"], "*": ["history"]}),
        "ops": user(admin=True),
        "scaler": Identity(role="scaler", password_hash=H),
        "agent-n1": Identity(role="agent", node="n1", password_hash=H),
        "lb": Identity(role="balancer", password_hash=H),
    }
)


def test_the_hash_is_mosquittos_pbkdf2_sha512_form() -> None:
    salt = bytes(range(12))
    hashed = hash_password("s3cret", salt)
    _, seven, iterations, b64salt, digest = hashed.split("$")
    assert (seven, iterations, base64.b64decode(b64salt)) == ("7", "101", salt)
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    assert base64.b64decode(digest) == expected
    assert password_matches("s3cret", hashed)
    assert not password_matches("other", hashed)
    assert hash_password("s3cret") != hash_password("s3cret")  # a new salt each time


def test_a_hash_mosquitto_passwd_wrote_is_read() -> None:
    # written by `mosquitto_passwd -b pw alice s3cret` (mosquitto 2.0.11)
    written = (
        "$7$101$XblqciqkB1LBp6dR$VQQnIU+WhbN9+Ucg80Ugkae2RnY9PmEQbYsCc6EYLXN7coECk6RW6cUt6"
        "xVwzjvODlRt4y/91Yv/IUYz59zRMA=="
    )
    assert password_matches("s3cret", written)


def test_a_user_acts_only_in_the_namespaces_granted() -> None:
    assert authorize(AUTH, "alice", "apply", "test") is None
    assert authorize(AUTH, "alice", "apply", "prod") == (
        "not allowed: user 'alice' may not apply in namespace 'prod'"
    )
    assert authorize(AUTH, "carol", "scale", "prod") is None
    assert authorize(AUTH, "carol", "apply", "prod") is not None
    assert authorize(AUTH, "carol", "history", "anything") is None  # granted on '*'


def test_cluster_verbs_are_for_admins() -> None:
    assert authorize(AUTH, "ops", "drain", None) is None
    assert authorize(AUTH, "ops", "apply", "prod") is None
    assert authorize(AUTH, "alice", "drain", None) == (
        "not allowed: user 'alice' may not drain on the cluster (only admins may)"
    )


def test_unknown_and_anonymous_requesters_are_refused() -> None:
    assert "no such identity" in (authorize(AUTH, "mallory", "apply", "test") or "")
    assert "cmd/<name>/<user>" in (authorize(AUTH, "", "apply", "test") or "")


def test_the_scaler_scales_everywhere_and_does_nothing_else() -> None:
    assert authorize(AUTH, "scaler", "scale", "prod") is None
    assert authorize(AUTH, "scaler", "apply", "prod") is not None


def test_an_agent_gets_only_its_own_nodes_secrets() -> None:
    assert authorize_secret_values(AUTH, "agent-n1", "agent", "n1") is None
    assert authorize_secret_values(AUTH, "agent-n1", "agent", "n2") == (
        "not allowed: user 'agent-n1' may not fetch the secrets of agent 'n2'"
    )
    assert authorize_secret_values(AUTH, "agent-n1", "balancer", "lb-1") is not None
    assert authorize_secret_values(AUTH, "lb", "balancer", "lb-1") is None
    assert authorize_secret_values(AUTH, "lb", "agent", "n1") is not None
    assert authorize_secret_values(AUTH, "alice", "agent", "n1") is not None


def test_grant_and_revoke() -> None:
    auth = grant(AUTH, "alice", "prod", ["history"])
    assert auth.identities["alice"].grants == {"test": ["*"], "prod": ["history"]}
    assert AUTH.identities["alice"].grants == {"test": ["*"]}  # a new file, the old unchanged
    assert authorize(auth, "alice", "history", "prod") is None
    auth = revoke(auth, "alice", "prod", [])
    assert authorize(auth, "alice", "history", "prod") is not None
    auth = grant(auth, "alice", None, [], admin=True)
    assert authorize(auth, "alice", "drain", None) is None
    auth = revoke(auth, "alice", None, [], admin=True)
    assert not auth.identities["alice"].admin
    with pytest.raises(AuthError, match="every verb"):
        revoke(auth, "alice", "test", ["apply"])
    with pytest.raises(AuthError, match="no grant"):
        revoke(auth, "alice", "prod", [])
    with pytest.raises(AuthError, match="unknown verb"):
        grant(auth, "alice", "prod", ["explode"])
    with pytest.raises(AuthError, match="must be a DNS label"):
        grant(auth, "alice", "Prod_1", [])


def test_add_and_remove_identities() -> None:
    auth = add_identity(AUTH, "bob", user())
    assert "bob" in auth.identities
    with pytest.raises(AuthError, match="exists"):
        add_identity(auth, "bob", user())
    with pytest.raises(AuthError, match="not a valid user name"):
        add_identity(auth, "a/b", user())
    with pytest.raises(AuthError, match="not a valid user name"):
        add_identity(auth, "a+", user())
    assert "bob" not in remove_identity(auth, "bob").identities
    with pytest.raises(AuthError, match="no identity 'zed'"):
        remove_identity(auth, "zed")


def test_an_agent_needs_its_node_and_only_agents_have_one() -> None:
    with pytest.raises(ValueError, match="needs its node"):
        Identity(role="agent", password_hash=H)
    with pytest.raises(ValueError, match="has no node"):
        Identity(role="user", node="n1", password_hash=H)


def test_the_file_reads_back_and_bad_files_say_why() -> None:
    assert parse_auth(dump_auth(AUTH)) == AUTH
    with pytest.raises(AuthError, match="not YAML"):
        parse_auth("a: [")
    with pytest.raises(AuthError, match="role"):
        parse_auth("identities: {x: {role: wizard, password_hash: h}}")
