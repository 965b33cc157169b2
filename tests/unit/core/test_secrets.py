"""Secrets, the pure parts: the spec's forms, which apps a change rolls, version pins, and
sealing a value to one agent's key."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import SpecError
from core.keys import AppKey
from core.sealing import Opener, Sealer, SealError, label
from core.secrets import (
    MAX_SEALED,
    SecretPut,
    apps_using,
    missing_secrets,
    names_used,
    pin_secrets,
    put_label,
    route_wanted,
    wanted,
)
from core.spec import AppSpec, validate_apps


def spec(name: str = "web", namespace: str = "default", **fields: Any) -> AppSpec:
    return AppSpec.model_validate({"name": name, "namespace": namespace, "image": "i", **fields})


def test_a_name_alone_mounts_at_run_secrets() -> None:
    [use] = spec(secrets=["db-pass"]).secrets
    assert (use.name, use.target, use.env, use.path) == (
        "db-pass",
        None,
        None,
        "/run/secrets/db-pass",
    )


@pytest.mark.parametrize(
    ("form", "path", "env"),
    [
        ({"name": "k", "target": "/etc/app/key.pem"}, "/etc/app/key.pem", None),
        ({"name": "k", "target": "tls/key.pem"}, "/run/secrets/tls/key.pem", None),
        ({"name": "k", "env": "API_KEY"}, None, "API_KEY"),
        ({"name": "k", "env": "API_KEY", "target": "/k"}, "/k", "API_KEY"),
    ],
)
def test_the_long_form_names_a_target_or_an_env_variable(
    form: dict[str, str], path: str | None, env: str | None
) -> None:
    [use] = spec(secrets=[form]).secrets
    assert (use.path, use.env) == (path, env)


@pytest.mark.parametrize(
    ("secrets", "fragment"),
    [
        (["a/b"], "secret name"),
        ([".."], "secret name"),
        ([{"name": "k", "target": "../etc/passwd"}], "without '.', '..'"),
        ([{"name": "k", "target": "/run//x"}], "without '.', '..'"),
        ([{"name": "k", "env": "1BAD"}], "secret env name"),
        (["k", "k"], "listed more than once"),
        ([{"name": "a", "target": "/x"}, {"name": "b", "target": "/x"}], "used twice"),
        ([{"name": "k", "valeu": "typo"}], "unknown field"),
    ],
)
def test_bad_secret_uses_are_refused_with_the_reason(secrets: list[Any], fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_apps([{"name": "web", "image": "i", "secrets": secrets}])
    assert fragment in "\n".join(caught.value.errors)


def test_an_env_secret_cannot_shadow_a_plain_env_value() -> None:
    with pytest.raises(SpecError, match="also set elsewhere"):
        validate_apps(
            [{"name": "w", "image": "i", "env": {"K": "x"}, "secrets": [{"name": "k", "env": "K"}]}]
        )


def test_secrets_are_part_of_the_template_and_a_spec_without_keeps_its_hash() -> None:
    plain = spec()
    assert plain.template_hash() == spec(secrets=[]).template_hash()
    with_secret = spec(secrets=["db"])
    assert with_secret.template_hash() != plain.template_hash()
    v1 = pin_secrets(with_secret, {"db": 1})
    v2 = pin_secrets(with_secret, {"db": 2})
    assert v1.template_hash() != v2.template_hash()  # a new value makes a new revision
    assert pin_secrets(v1, {"db": 1}) is v1


def test_pins_and_missing_secrets() -> None:
    s = spec(secrets=["db", {"name": "api", "env": "API"}])
    assert missing_secrets(s, {"db": 3}) == [
        "app default/web: secret 'api' does not exist in namespace default "
        "(create it first: shoal secret create api -n default ...)"
    ]
    pinned = pin_secrets(s, {"db": 3, "api": 1})
    assert [(u.name, u.version) for u in pinned.secrets] == [("db", 3), ("api", 1)]
    assert wanted([pinned, spec("other")]) == {("default", "db", 3), ("default", "api", 1)}
    assert wanted([s]) == set()  # nothing pinned: nothing may be delivered


def test_a_change_rolls_exactly_the_apps_of_that_namespace_using_that_secret() -> None:
    specs = [
        spec("web", secrets=["db"]),
        spec("api", secrets=[{"name": "db", "env": "DB"}, "other"]),
        spec("cache"),
        spec("web", "prod", secrets=["db"]),
        spec("worker", secrets=["other"]),
    ]
    assert apps_using(specs, "default", "db") == [
        AppKey("default", "api"),
        AppKey("default", "web"),
    ]
    assert apps_using(specs, "prod", "db") == [AppKey("prod", "web")]
    assert apps_using(specs, "default", "nothing") == []


def test_a_put_carries_the_value_sealed_to_the_controller_and_bounded() -> None:
    controller = Opener(seed=b"k" * 32)
    assert Opener(seed=b"k" * 32).public_key == controller.public_key  # same key, same pair
    sealer = Sealer(controller.public_key)
    value = bytes(range(256))
    put = SecretPut(
        name="db", sender=sealer.public_key, sealed=sealer.seal(value, put_label("default", "db"))
    )
    assert controller.open(put.sender, put.sealed, put_label("default", "db")) == value
    with pytest.raises(SealError):  # a value sealed for another secret does not open
        controller.open(put.sender, put.sealed, put_label("default", "other"))
    with pytest.raises(ValueError, match="at most"):
        SecretPut(name="big", sender=sealer.public_key, sealed="x" * (MAX_SEALED + 1))


def test_a_sealed_value_opens_only_with_the_agent_key_and_its_label() -> None:
    agent = Opener()
    sealer = Sealer(agent.public_key)
    sealed = sealer.seal(b"hunter2", label("default", "db", 2))
    assert b"hunter2" not in sealed.encode()
    assert agent.open(sealer.public_key, sealed, label("default", "db", 2)) == b"hunter2"
    with pytest.raises(SealError):
        agent.open(sealer.public_key, sealed, label("default", "db", 3))  # another version
    with pytest.raises(SealError):
        Opener().open(sealer.public_key, sealed, label("default", "db", 2))  # another agent
    with pytest.raises(SealError, match=r"X25519|base64"):
        Sealer("bm90IGEga2V5")


def test_a_route_certificate_is_pinned_and_given_to_balancers_only() -> None:
    s = spec(
        ports={"http": 80},
        route={"host": "web.test", "port": "http", "tls": {"cert": "crt", "key": "key"}},
        secrets=["db"],
    )
    assert names_used(s) == ["db", "crt", "key"]
    assert missing_secrets(s, {"db": 1, "crt": 1}) == [
        "app default/web: secret 'key' does not exist in namespace default "
        "(create it first: shoal secret create key -n default ...)"
    ]
    pinned = pin_secrets(s, {"db": 1, "crt": 4, "key": 5})
    assert pinned.route is not None
    assert pinned.route.tls is not None
    assert (pinned.route.tls.cert_version, pinned.route.tls.key_version) == (4, 5)
    # the certificate is not part of the template: a new one restarts nothing
    assert pinned.template_hash() == pin_secrets(s, {"db": 1, "crt": 9, "key": 9}).template_hash()
    assert route_wanted([pinned]) == {("default", "crt", 4), ("default", "key", 5)}
    assert wanted([pinned]) == {("default", "db", 1)}  # a node never gets the route's key
    assert apps_using([pinned], "default", "key") == [AppKey("default", "web")]
