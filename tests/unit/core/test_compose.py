"""Compose files -> app documents (``core.compose``): every key, both syntaxes, and an
error for each key Shoal cannot honour."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from core.compose import Compose, compose_memory, namespace_of, read_compose, translate
from core.compose_build import ContextFile, build_digest, image_tag
from core.errors import SpecError
from core.spec import validate_apps

FOLDER = "/srv/shop"


def compose(
    text: str,
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    **options: Any,
) -> Compose:
    data, raw = read_compose(textwrap.dedent(text), "compose.yaml")
    return translate(
        data,
        raw=raw,
        folder=FOLDER,
        env=env or {},
        read_text=(files or {}).get,
        source="compose.yaml",
        **options,
    )


def service(body: str, **kwargs: Any) -> dict[str, Any]:
    """The app document of one service ``web`` (with a ``db`` beside it), validated."""
    text = "services:\n  web:\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\n"
    text += "  db:\n    image: redis:7\n    healthcheck: {test: [CMD, true]}\n"
    text += "    ports: ['6379']\n    x-shoal-host: db.local\n"
    text += "volumes:\n  data: {}\n  shared: {external: true}\n  named: {name: the-name}\n"
    text += "networks:\n  front: {}\n  back: {driver: bridge, name: shop-back}\n"
    text += "secrets:\n  token: {file: ./token.txt}\n  api: {external: true, name: api-key}\n"
    text += "configs:\n  conf: {content: 'x=1'}\n"
    result = compose(text, **kwargs)
    docs = result.with_images({app: f"built/{app}:1" for app in result.builds})
    validate_apps(docs, "compose.yaml")  # every translation is a valid spec
    [web] = [d for d in docs if d["name"] == "web"]
    return web


def errors(text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        compose(text, **kwargs)
    return caught.value.errors


BASE = {
    "name": "web",
    "namespace": "shop",
    "labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"},
}

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("image", "image: nginx:1.25", {"image": "nginx:1.25"}),
    (
        "command string",
        "image: i\ncommand: redis-server --port \"6380\" --save ''",
        {"args": ["redis-server", "--port", "6380", "--save", ""]},
    ),
    (
        "command list",
        "image: i\ncommand: [redis-server, --port, 6380]",
        {"args": ["redis-server", "--port", "6380"]},
    ),
    (
        "entrypoint string",
        "image: i\nentrypoint: /bin/sh -c 'echo hi'",
        {"command": ["/bin/sh", "-c", "echo hi"]},
    ),
    (
        "entrypoint list",
        "image: i\nentrypoint: [/init, --verbose]",
        {"command": ["/init", "--verbose"]},
    ),
    (
        "environment list",
        "image: i\nenvironment: [A=1, B=x=y, FROM_SHELL, NOT_SET]",
        {"env": {"A": "1", "B": "x=y", "FROM_SHELL": "shell"}},
    ),
    (
        "environment map",
        "image: i\nenvironment: {VERSION: 1.10, COUNTRY: NO, MODE: 0755, ON: true, FROM_SHELL: "
        "null, NOT_SET: null}",
        {
            "env": {
                "VERSION": "1.10",
                "COUNTRY": "NO",
                "MODE": "0755",
                "ON": "true",
                "FROM_SHELL": "shell",
            }
        },
    ),
    ("env_file string", "image: i\nenv_file: web.env", {"env": {"FILE": "1", "BOTH": "file"}}),
    (
        "env_file list, long form, environment wins",
        "image: i\nenv_file: [web.env, {path: ./missing.env, required: false}]\nenvironment: "
        "{BOTH: env}",
        {"env": {"FILE": "1", "BOTH": "env"}},
    ),
    (
        "ports short",
        "image: i\nports: ['8080:80']",
        {"ports": {"http": 80}, "route": {"port": "http"}},
    ),
    (
        "ports with ip and protocol",
        "image: i\nports: ['127.0.0.1:8080:80/tcp']",
        {"ports": {"http": 80}},
    ),
    ("ports container only", "image: i\nports: [80]", {"ports": {"http": 80}}),
    (
        "ports: a well-known TCP port is a TCP route at its published port",
        "image: i\nports: ['5432:5432']",
        {"ports": {"tcp-5432": 5432}, "tcp_routes": [{"listen": 5432, "port": "tcp-5432"}]},
    ),
    (
        "ports: a TCP port not published is declared only",
        "image: i\nports: ['6379']",
        {"ports": {"tcp-6379": 6379}},
    ),
    (
        "ports: a second port is a TCP route too",
        "image: i\nports: ['8080:80', '8443:443', '127.0.0.1:15432:5432']",
        {
            "ports": {"http": 80, "tcp-443": 443, "tcp-5432": 5432},
            "route": {"port": "http"},
            "tcp_routes": [
                {"listen": 8443, "port": "tcp-443"},
                {"listen": 15432, "port": "tcp-5432"},
            ],
        },
    ),
    (
        "ports long, app_protocol not http",
        "image: i\nports: [{target: 5000, published: 15000, app_protocol: postgresql}]",
        {"ports": {"tcp-5000": 5000}, "tcp_routes": [{"listen": 15000, "port": "tcp-5000"}]},
    ),
    (
        "ports long, app_protocol http on a TCP-looking port",
        "image: i\nports: [{target: 6379, published: 6379, app_protocol: http}]",
        {"ports": {"http": 6379}, "route": {"port": "http"}},
    ),
    (
        "expose",
        "image: i\nports: ['8080:80']\nexpose: ['3000', 80, '9000/tcp']",
        {"ports": {"http": 80, "tcp-3000": 3000, "tcp-9000": 9000}, "route": {"port": "http"}},
    ),
    ("networks list", "image: i\nnetworks: [default, front]", {}),
    (
        "networks map with aliases",
        "image: i\nnetworks: {front: {aliases: [www, Web_Site]}, default: null}",
        {"network": {"aliases": ["www", "web-site"]}},
    ),
    (
        "container_name",
        "image: i\ncontainer_name: shop_web_1",
        {"network": {"aliases": ["shop-web-1"]}},
    ),
    (
        "container_name equal to the app's name adds nothing",
        "image: i\ncontainer_name: web",
        {},
    ),
    (
        "secrets short and long",
        "image: i\nsecrets: [token, {source: api, target: /etc/api.key}]",
        {"secrets": [{"name": "token"}, {"name": "api-key", "target": "/etc/api.key"}]},
    ),
    (
        "configs short",
        "image: i\nconfigs: [conf]",
        {"secrets": [{"name": "conf", "target": "/conf"}]},
    ),
    (
        "configs long",
        "image: i\nconfigs: [{source: conf, target: /etc/app.conf}]",
        {"secrets": [{"name": "conf", "target": "/etc/app.conf"}]},
    ),
    (
        "ports long",
        "image: i\nports: [{target: 80, published: 8080, protocol: tcp, app_protocol: http}]",
        {"ports": {"http": 80}, "route": {"port": "http"}},
    ),
    (
        "ports with x-shoal-host",
        "image: i\nx-shoal-host: shop.local\nports: ['8080:80']",
        {"route": {"port": "http", "host": "shop.local"}},
    ),
    (
        "healthcheck CMD",
        "image: i\nhealthcheck: {test: [CMD, wget, -q, localhost], interval: 2s, timeout: 1s, "
        "retries: 5, start_period: 10s}",
        {
            "health": {
                "readiness": {
                    "exec": ["wget", "-q", "localhost"],
                    "interval": "2s",
                    "timeout": "1s",
                    "failures": 5,
                    "initial_delay": "10s",
                }
            }
        },
    ),
    (
        "healthcheck CMD-SHELL",
        "image: i\nhealthcheck: {test: [CMD-SHELL, 'pg_isready || exit 1']}",
        {
            "health": {
                "readiness": {
                    "exec": ["/bin/sh", "-c", "pg_isready || exit 1"],
                    "interval": "30s",
                    "timeout": "30s",
                    "failures": 3,
                }
            }
        },
    ),
    (
        "healthcheck string",
        "image: i\nhealthcheck: {test: pg_isready}",
        {
            "health": {
                "readiness": {
                    "exec": ["/bin/sh", "-c", "pg_isready"],
                    "interval": "30s",
                    "timeout": "30s",
                    "failures": 3,
                }
            }
        },
    ),
    ("healthcheck NONE", "image: i\nhealthcheck: {test: [NONE]}", {}),
    ("healthcheck disable", "image: i\nhealthcheck: {disable: true}", {}),
    (
        "depends_on short",
        "image: i\ndepends_on: [db]",
        {"depends_on": [{"app": "db", "condition": "started"}]},
    ),
    (
        "depends_on long",
        "image: i\ndepends_on: {db: {condition: service_healthy, required: true, restart: false}}",
        {"depends_on": [{"app": "db", "condition": "healthy"}]},
    ),
    (
        "depends_on long, started",
        "image: i\ndepends_on: {db: {condition: service_started}}",
        {"depends_on": [{"app": "db", "condition": "started"}]},
    ),
    ("deploy.replicas", "image: i\ndeploy: {replicas: 3}", {"replicas": 3}),
    (
        "deploy.resources limits and reservations",
        "image: i\ndeploy: {resources: {limits: {cpus: '2', memory: 1G}, reservations: {cpus: "
        "0.25, memory: 256M}}}",
        {
            "resources": {
                "cpu": 0.25,
                "memory": 256 * 1024**2,
                "cpu_limit": 2.0,
                "memory_limit": 1024**3,
            }
        },
    ),
    (
        "deploy.resources limits only",
        "image: i\ndeploy: {resources: {limits: {cpus: 0.05, memory: 128m}}}",
        {"resources": {"cpu": 0.05, "memory": 128 * 1024**2, "cpu_limit": 0.05}},
    ),
    (
        "deploy.update_config start-first",
        "image: i\ndeploy: {replicas: 4, update_config: {parallelism: 2, order: start-first, "
        "failure_action: rollback}}",
        {"update": {"max_surge": 2, "max_unavailable": 0, "auto_rollback": True}},
    ),
    (
        "deploy.update_config defaults (stop-first, pause)",
        "image: i\ndeploy: {update_config: {}}",
        {"update": {"max_surge": 0, "max_unavailable": 1, "auto_rollback": False}},
    ),
    ("deploy.restart_policy any", "image: i\ndeploy: {restart_policy: {condition: any}}", {}),
    (
        "deploy.placement",
        "image: i\ndeploy: {placement: {constraints: ['node.labels.zone == eu', "
        "node.labels.disk==ssd], preferences: [{spread: node.labels.zone}], "
        "max_replicas_per_node: 2}}",
        {
            "placement": {
                "constraints": {"zone": ["eu"], "disk": ["ssd"]},
                "spread_by": "zone",
                "max_per_node": 2,
            }
        },
    ),
    (
        "labels list and deploy.labels",
        "image: i\nlabels: [team=shop, tier]\ndeploy: {labels: {owner: ops}}",
        {"labels": {**BASE["labels"], "team": "shop", "tier": "", "owner": "ops"}},
    ),
    (
        "labels map",
        "image: i\nlabels: {version: 1.10}",
        {"labels": {**BASE["labels"], "version": "1.10"}},
    ),
    ("user", "image: i\nuser: 1000:1000", {"user": "1000:1000"}),
    ("working_dir", "image: i\nworking_dir: /app", {"working_dir": "/app"}),
    ("hostname", "image: i\nhostname: web-1", {"hostname": "web-1"}),
    ("stop_signal", "image: i\nstop_signal: SIGQUIT", {"stop_signal": "SIGQUIT"}),
    (
        "stop_grace_period",
        "image: i\nstop_grace_period: 1m30s",
        {"termination": {"grace": "1m30s"}},
    ),
    (
        "volumes short",
        "image: i\nvolumes: ['data:/var/lib/data', './conf:/etc/conf:ro', '/abs:/abs:rw', "
        "'shared:/s', 'named:/n']",
        {
            "volumes": [
                {"source": "data", "target": "/var/lib/data", "read_only": False},
                {"source": "/srv/shop/conf", "target": "/etc/conf", "read_only": True},
                {"source": "/abs", "target": "/abs", "read_only": False},
                {"source": "shared", "target": "/s", "read_only": False},
                {"source": "the-name", "target": "/n", "read_only": False},
            ]
        },
    ),
    (
        "volumes long",
        "image: i\nvolumes: [{type: volume, source: data, target: /d}, {type: bind, source: "
        "../etc, target: /e, read_only: true}]",
        {
            "volumes": [
                {"source": "data", "target": "/d", "read_only": False},
                {"source": "/srv/etc", "target": "/e", "read_only": True},
            ]
        },
    ),
    ("restart always", "image: i\nrestart: always", {}),
    ("restart unless-stopped", "image: i\nrestart: unless-stopped", {}),
    (
        "security keys",
        "image: i\nprivileged: false\nread_only: true\ncap_add: [NET_ADMIN]\ncap_drop: [ALL]",
        {
            "security": {
                "privileged": False,
                "read_only_rootfs": True,
                "cap_add": ["NET_ADMIN"],
                "cap_drop": ["ALL"],
            }
        },
    ),
    ("scale", "image: i\nscale: 2", {"replicas": 2}),
    (
        "cpus, mem_limit, mem_reservation",
        "image: i\ncpus: 1.5\nmem_limit: 1g\nmem_reservation: 512m",
        {
            "resources": {
                "cpu": 0.1,
                "cpu_limit": 1.5,
                "memory": 512 * 1024**2,
                "memory_limit": 1024**3,
            }
        },
    ),
    ("build string", "build: ./web", {"image": "built/web:1"}),
    ("x- extensions are ignored", "image: i\nx-notes: anything", {}),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in CASES], ids=[c[0] for c in CASES]
)
def test_every_key_maps(body: str, expected: dict[str, Any]) -> None:
    web = service(
        body,
        env={"FROM_SHELL": "shell"},
        files={f"{FOLDER}/web.env": "FILE=1\nBOTH=file\n"},
    )
    for key, value in expected.items():
        assert web[key] == value, key
    if not expected:
        assert set(web) <= {"name", "namespace", "labels", "image"}


def test_build_both_syntaxes() -> None:
    short = compose("services:\n  web:\n    build: ./web\n")
    assert short.builds["web"].context == f"{FOLDER}/web"
    assert short.builds["web"].repository == "shop-web"
    long = compose(
        """
        services:
          web:
            image: registry.local:5000/shop/web:latest
            build:
              context: ../src
              dockerfile: docker/Dockerfile.prod
              target: runtime
              args: {VERSION: 1.10, FROM_SHELL: null}
          api:
            build: {context: ., args: [A=1, FROM_SHELL, UNSET]}
        """,
        env={"FROM_SHELL": "s"},
    )
    web = long.builds["web"]
    assert (web.context, web.dockerfile, web.target) == (
        "/srv/src",
        "docker/Dockerfile.prod",
        "runtime",
    )
    assert web.args == (("FROM_SHELL", "s"), ("VERSION", "1.10"))
    assert web.repository == "registry.local:5000/shop/web"
    assert long.builds["api"].args == (("A", "1"), ("FROM_SHELL", "s"))
    assert long.with_images({"web": "x:1"})[0]["image"] == "x:1"


def test_build_tags_are_content_addressed() -> None:
    build = compose("services:\n  web:\n    build: ./web\n").builds["web"]
    files = [ContextFile("a.txt", 0o644, b"a"), ContextFile("bin/run", 0o755, b"#!")]
    digest = build_digest(build, files, b"FROM scratch\n")
    assert digest == build_digest(build, list(reversed(files)), b"FROM scratch\n")
    assert digest != build_digest(build, files[:1], b"FROM scratch\n")
    assert digest != build_digest(
        build, [ContextFile("a.txt", 0o755, b"a"), files[1]], b"FROM scratch\n"
    )
    assert digest != build_digest(build, files, b"FROM scratch\nCOPY a.txt /\n")
    other = compose("services:\n  web:\n    build: {context: ./web, args: [V=2]}\n").builds["web"]
    assert digest != build_digest(other, files, b"FROM scratch\n")
    assert image_tag(build, digest) == f"shop-web:{digest[:12]}"
    assert image_tag(build, digest, "127.0.0.1:5000/") == f"127.0.0.1:5000/shop-web:{digest[:12]}"


def test_namespace_follows_compose_rules() -> None:
    assert namespace_of({}, "My_Shop", {}, None) == "my-shop"
    assert namespace_of({"name": "from-file"}, "folder", {}, None) == "from-file"
    assert (
        namespace_of({"name": "from-file"}, "folder", {"COMPOSE_PROJECT_NAME": "env"}, None)
        == "env"
    )
    assert (
        namespace_of({"name": "from-file"}, "folder", {"COMPOSE_PROJECT_NAME": "env"}, "flag")
        == "flag"
    )
    assert compose("name: ${NS:-shop2}\nservices: {web: {image: i}}").namespace == "shop2"
    with pytest.raises(SpecError, match="no valid namespace"):
        namespace_of({}, "___", {}, None)


DB_AND_WEB = "services:\n  db: {image: redis, ports: ['6379'], x-shoal-host: db.local}\n"
DB_AND_WEB += "  web:\n    image: i\n"

UNSUPPORTED = [
    ("tty: true", "service web: tty is not supported"),
    (
        "networks: {default: {ipv4_address: 10.0.0.5}}",
        "service web: networks.default.ipv4_address is not supported: Shoal gives addresses",
    ),
    ("expose: ['53/udp']", "service web: expose[0] is not supported: protocol udp"),
    ("ports: ['53:53/udp']", "service web: ports[0] is not supported: protocol udp"),
    (
        "ports: ['8000-8001:80-81']",
        "service web: ports[0] is not supported: '8000-8001:80-81': port ranges",
    ),
    (
        "healthcheck: {test: [CMD, x], start_interval: 1s}",
        "service web: healthcheck.start_interval is not supported",
    ),
    ("build: {context: ., cache_from: [x]}", "service web: build.cache_from is not supported"),
    (
        "build: https://github.com/x/y.git",
        "service web: build.context is not supported: https://github.com/x/y.git is remote",
    ),
    ("deploy: {endpoint_mode: vip}", "service web: deploy.endpoint_mode is not supported"),
    (
        "deploy: {resources: {limits: {pids: 10}}}",
        "service web: deploy.resources.limits.pids is not supported",
    ),
    (
        "deploy: {update_config: {delay: 10s}}",
        "service web: deploy.update_config.delay is not supported",
    ),
    (
        "deploy: {restart_policy: {max_attempts: 3}}",
        "service web: deploy.restart_policy.max_attempts is not supported",
    ),
    (
        "deploy: {placement: {constraints: [node.role==manager]}}",
        "service web: deploy.placement.constraints[0] is not supported",
    ),
    ("volumes: [/anonymous]", "service web: volumes[0] is not supported: anonymous volumes"),
    (
        "volumes: [{type: tmpfs, target: /t}]",
        "service web: volumes[0].type: tmpfs is not supported",
    ),
    (
        "depends_on: {db: {condition: service_healthy, required: false}}",
        "service web: depends_on.db.required is not supported",
    ),
]


@pytest.mark.parametrize(("body", "error"), UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_each_unsupported_key_is_an_error_naming_key_and_service(body: str, error: str) -> None:
    text = DB_AND_WEB + textwrap.indent(body, "    ") + "\n"
    found = errors(text)
    assert any(error in line for line in found), found
    assert all(line.startswith("compose.yaml: ") for line in found)
    # --allow-unsupported: a warning instead, and the rest is translated
    allowed = compose(text, allow_unsupported=True)
    assert any(error in w and "ignored, --allow-unsupported" in w for w in allowed.warnings)
    assert {d["name"] for d in allowed.apps} == {"db", "web"}


REFUSED = [
    ("restart: 'no'", "service web: restart: no: Shoal keeps every replica running"),
    (
        "restart: on-failure:3",
        "service web: restart: on-failure:3: Shoal keeps every replica running",
    ),
    (
        "deploy: {restart_policy: {condition: on-failure}}",
        "deploy.restart_policy.condition: on-failure: Shoal keeps",
    ),
    (
        "deploy: {mode: global}",
        "service web: deploy.mode: global: only replicated (one replica per node)",
    ),
    ("deploy: {mode: replicated-job}", "deploy.mode: replicated-job: only replicated (Shoal keeps"),
    (
        "depends_on: {db: {condition: service_completed_successfully}}",
        "depends_on.db.condition: service_completed_successfully: Shoal keeps every replica "
        "running",
    ),
    ("depends_on: [cache]", "service web: depends_on.cache: no such service in the file"),
    (
        "container_name: the-web\ndeploy: {replicas: 2}",
        "service web: container_name: names one container, and the service has 2 replicas",
    ),
    ("networks: [nowhere]", "service web: networks.nowhere: is not declared under top-level"),
    ("secrets: [nope]", "service web: secrets[0]: nope is not declared under top-level secrets:"),
    ("configs: [token]", "service web: configs[0]: token is not declared under top-level configs:"),
    ("ports: ['5432:5432', '6432:5432', '5432:6379']", "host port 5432 is published twice"),
    ("expose: ['30-40']", "service web: expose[0]: '30-40' is not a port number"),
    ("volumes: ['undeclared:/x']", "volume undeclared is not declared under top-level volumes:"),
    ("env_file: nowhere.env", "service web: env_file: /srv/shop/nowhere.env does not exist"),
    ('command: "unbalanced \'quote"', "service web: command: cannot split"),
]


@pytest.mark.parametrize(("body", "error"), REFUSED, ids=[r[0] for r in REFUSED])
def test_what_shoal_refuses_even_with_allow_unsupported(body: str, error: str) -> None:
    text = DB_AND_WEB + textwrap.indent(body, "    ") + "\n"
    for allow in (False, True):
        found = errors(text, allow_unsupported=allow)
        assert any(error in line for line in found), found


def test_file_level_problems() -> None:
    split = "services: {db: {image: i}, web: {image: i, networks: [front]}}\nnetworks: {front: {}}"
    assert any(
        "top level: networks is not supported: services db and web share no network" in e
        for e in errors(split)
    )
    assert compose(split, allow_unsupported=True).warnings
    assert any(
        "top level: networks.front.external is not supported: Shoal makes and removes" in e
        for e in errors("services: {web: {image: i}}\nnetworks: {front: {external: true}}")
    )
    assert any(
        "top level: networks.front.internal is not supported" in e
        for e in errors("services: {web: {image: i}}\nnetworks: {front: {internal: true}}")
    )
    assert any(
        "top level: include is not supported" in e
        for e in errors("services: {web: {image: i}}\ninclude: [a.yaml]")
    )
    assert any("needs image or build" in e for e in errors("services: {web: {}}"))
    assert any(
        "depends_on has a cycle: a -> b -> a" in e
        for e in errors(
            "services: {a: {image: i, depends_on: [b]}, b: {image: i, depends_on: [a]}}"
        )
    )
    assert any(
        "services a, b publish HTTP ports without a host name" in e
        for e in errors("services: {a: {image: i, ports: ['80']}, b: {image: i, ports: ['81']}}")
    )
    assert any(
        "service web: depends_on.db: service_healthy needs that service to publish a port" in e
        for e in errors(
            "services: {db: {image: i}, "
            "web: {image: i, depends_on: {db: {condition: service_healthy}}}}"
        )
    )
    assert any(
        "taken by another service" in e
        for e in errors("services: {my_app: {image: i}, my-app: {image: i}}")
    )
    assert compose("version: '3.8'\nservices: {Web_1: {image: i}}").apps[0]["name"] == "web-1"


def test_interpolation_across_the_file() -> None:
    result = compose(
        """
        services:
          web:
            image: "${REGISTRY:-docker.io}/shop:${TAG-latest}"
            environment: {PRICE: "$$5", HOME_DIR: $HOME, MISSING: "${NOPE}"}
        """,
        env={"HOME": "/home/u", "TAG": ""},
    )
    [web] = result.apps
    assert web["image"] == "docker.io/shop:"
    assert web["env"] == {"PRICE": "$5", "HOME_DIR": "/home/u", "MISSING": ""}
    assert result.warnings == ["variable NOPE is not set: an empty string is used"]
    found = errors("services: {web: {image: '${IMAGE:?set IMAGE to the image}'}}")
    assert found == [
        "compose.yaml: services.web.image: required variable IMAGE is missing a value: set IMAGE "
        "to the image"
    ]


def test_compose_memory_sizes() -> None:
    assert compose_memory("512m") == 512 * 1024**2
    assert compose_memory("1.5G") == 1536 * 1024**2
    assert compose_memory("2gb") == 2 * 1024**3
    assert compose_memory(1024) == 1024
    with pytest.raises(ValueError, match="not a byte size"):
        compose_memory("lots")


def test_duplicate_keys_and_bad_yaml_name_the_line() -> None:
    with pytest.raises(
        SpecError, match="line 4: key 'image' is given twice in one mapping \\(first at line 3\\)"
    ):
        read_compose("services:\n  web:\n    image: a\n    image: b\n", "compose.yaml")


def test_the_text_document_is_what_a_second_parse_with_base_loader_gave() -> None:
    """One parse gives both documents (they were two parses of the same text)."""
    text = textwrap.dedent(
        """
        x-env: &env {VERSION: 1.10, DEBUG: NO}
        services:
          web:
            image: a:1
            environment:
              <<: *env
              MODE: 0755
            ports: ['8080:80']
        """
    )
    typed, raw = read_compose(text, "c.yaml")
    assert raw == yaml.load(text, Loader=yaml.BaseLoader)
    assert typed["services"]["web"]["environment"] == {
        "VERSION": 1.1,
        "DEBUG": "NO",
        "MODE": 755,
    }


def test_compose_nested_too_deeply_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as caught:
        read_compose("services: " + "[" * 2000 + "]" * 2000, "c.yaml")
    assert caught.value.errors == ["c.yaml: not valid YAML: nested too deeply"]


def test_services_on_one_network_and_secrets_created_on_apply() -> None:
    result = compose(
        """
        services:
          api:
            image: i
            networks: [back]
            secrets: [db-pass, {source: token, target: token.txt}]
            configs: [nginx]
          db:
            image: i
            networks: {back: {aliases: [postgres]}}
            container_name: the-db
        networks: {back: {}}
        secrets:
          db-pass: {file: ./secrets/db.txt}
          token: {environment: TOKEN}
          shared: {external: true}
        configs:
          nginx: {content: "listen 80;", name: nginx-conf}
        """,
        env={"TOKEN": "t0k"},
    )
    validate_apps(result.apps, "compose.yaml")
    api, db = sorted(result.apps, key=lambda d: d["name"])
    assert api["secrets"] == [
        {"name": "db-pass"},
        {"name": "token", "target": "token.txt"},
        {"name": "nginx-conf", "target": "/nginx"},
    ]
    assert db["network"] == {"aliases": ["postgres", "the-db"]}
    assert [(s.name, s.file, s.value) for s in result.secrets] == [
        ("db-pass", f"{FOLDER}/secrets/db.txt", None),
        ("token", None, "t0k"),
        ("nginx-conf", None, "listen 80;"),
    ]


@pytest.mark.parametrize(
    ("top", "error"),
    [
        (
            "secrets: {s: {file: x}}\n"
            "services: {web: {image: i, secrets: [{source: s, mode: 0400}]}}",
            "service web: secrets[0].mode is not supported: Shoal mounts secrets read-only",
        ),
        (
            "configs: {c: {file: x}}\n"
            "services: {web: {image: i, configs: [{source: c, uid: '1'}]}}",
            "service web: configs[0].uid is not supported",
        ),
        ("secrets: {s: {}}", "secrets.s: needs one of file, environment or content"),
        ("secrets: {s: {environment: UNSET}}", "secrets.s: environment variable UNSET is not set"),
        ("secrets: {s: {external: true, file: x}}", "secrets.s: external and file exclude"),
        ("secrets: {s: {file: x, name: 'bad name'}}", "secrets.s: 'bad name' is no valid secret"),
        ("secrets: {s: {file: x, driver: vault}}", "top level: secrets.s.driver is not supported"),
        (
            "secrets: {s: {file: x}}\nconfigs: {c: {file: y, name: s}}",
            "configs.c: the name s is also one of the file's secrets",
        ),
    ],
)
def test_secret_declarations_that_are_refused(top: str, error: str) -> None:
    text = top if "services:" in top else "services: {web: {image: i}}\n" + top
    found = errors(text)
    assert any(error in line for line in found), found
