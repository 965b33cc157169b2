"""A spec that validates can be sent and stored: over generated specs full of extreme
values, validation either refuses cleanly (``SpecError``) or gives a spec whose round trips
through the bus (msgpack and JSON envelopes) and the store (JSON text in an SQLite row)
give it back equal. No other exception (``OverflowError``...) ever leaves validation."""

from __future__ import annotations

import sqlite3
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import codec
from core.errors import SpecError
from core.spec import AppSpec, load_specs, validate_apps
from core.state import AppState, AppVersion

EXTREME_NUMBERS: list[Any] = [
    0,
    -0.0,
    1,
    -1,
    0.5,
    1e-320,
    1e999,
    -1e999,
    float("nan"),
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    1e30,
    1.7976931348623157e308,
    True,
    False,
]
EXTREME_TEXT: list[Any] = [
    ".nan",
    ".inf",
    "1e999",
    "nan",
    "inf",
    "-0",
    "1m30s",
    "1h2m3.5s",
    "500ms",
    "512m",
    "512M",
    "1Gi",
    "250m",
    "70%",
    "nan%",
    "\ud800",
    "a\0b",
    "x" * 70_000,
    "x" * (1024**2 + 1),
    "9" * 5000,
    "",
]

numbers = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.one_of(st.sampled_from(EXTREME_TEXT), st.text(max_size=12))
scalars = st.one_of(numbers, texts, st.none())
names = st.one_of(st.sampled_from(["web", "a", "db-1", "http"]), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=6,
)


def maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


def duration() -> st.SearchStrategy[Any]:
    return st.one_of(numbers, texts, st.sampled_from(["1s", "2m", "0", "1.5"]))


def port() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(["http", 80, 8080, 0, 65536]), numbers)


probes = maybe(
    http=st.sampled_from(["/", "/healthz", "bad"]),
    tcp=port(),
    exec=st.lists(texts, max_size=2),
    port=port(),
    interval=duration(),
    timeout=duration(),
    failures=numbers,
    successes=numbers,
    initial_delay=duration(),
)
app_fields = maybe(
    namespace=st.sampled_from(["default", "prod", "Bad"]),
    command=st.lists(texts, max_size=3),
    args=st.lists(st.one_of(texts, numbers), max_size=3),
    env=st.dictionaries(st.sampled_from(["A", "B_2", "1X"]), scalars, max_size=3),
    replicas=numbers,
    resources=maybe(
        cpu=st.one_of(numbers, texts),
        memory=st.one_of(numbers, texts),
        cpu_limit=st.one_of(numbers, texts),
        memory_limit=st.one_of(numbers, texts),
    ),
    ports=st.dictionaries(names, numbers, max_size=2),
    health=maybe(readiness=probes, liveness=probes),
    route=maybe(
        host=texts,
        path=st.sampled_from(["/", "/api", "x"]),
        port=port(),
        algorithm=st.sampled_from(["round_robin", "hash", "x"]),
    ),
    placement=maybe(
        strategy=st.sampled_from(["spread", "binpack"]),
        constraints=st.dictionaries(names, st.one_of(texts, st.lists(texts, max_size=2))),
        spread_by=texts,
        max_per_node=numbers,
    ),
    update=maybe(
        max_surge=numbers,
        max_unavailable=numbers,
        auto_rollback=st.booleans(),
        progress_deadline=duration(),
        canary=numbers,
    ),
    autoscale=maybe(
        min=numbers,
        max=numbers,
        target=maybe(
            rps_per_replica=numbers,
            inflight_per_replica=numbers,
            p95_latency_ms=numbers,
            cpu_utilization=st.one_of(numbers, texts),
            memory_utilization=st.one_of(numbers, texts),
        ),
    ),
    termination=maybe(drain=duration(), grace=duration()),
    labels=st.dictionaries(names, st.one_of(texts, numbers), max_size=2),
    volumes=st.lists(maybe(source=texts, target=texts, read_only=st.booleans()), max_size=2),
    working_dir=texts,
    user=st.one_of(texts, numbers),
    extra=values,
)
apps = st.builds(
    lambda base, fields: {**base, **{k: v for k, v in fields.items() if k != "extra"}},
    st.fixed_dictionaries(
        {"name": st.sampled_from(["web", "a"]), "image": st.sampled_from(["x:1", "busybox"])}
    ),
    app_fields,
)


def store_round_trip(spec: AppSpec) -> AppSpec:
    """Through an SQLite row as JSON text, the way the controller's store keeps specs."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE apps (spec TEXT NOT NULL)")
        db.execute("INSERT INTO apps VALUES (?)", (spec.model_dump_json(),))
        (text,) = db.execute("SELECT spec FROM apps").fetchone()
    finally:
        db.close()
    return AppSpec.model_validate_json(text)


def bus_round_trips(spec: AppSpec) -> list[AppSpec]:
    state = AppState(
        namespace=spec.namespace,
        name=spec.name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=spec.replicas,
        versions=[AppVersion(revision=1, spec=spec, replicas=spec.replicas)],
    )
    envelope = codec.make("app", state, src="test")
    out = []
    for payload in (codec.encode(envelope), codec.encode_json(envelope)):
        decoded = codec.decode(payload, allow_json=True)
        assert decoded is not None
        opened = decoded.open(AppState)
        assert opened == state
        out.append(opened.spec)
    return out


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(apps)
def test_a_spec_that_validates_round_trips_through_the_bus_and_the_store(
    doc: dict[str, Any],
) -> None:
    try:
        (spec,) = validate_apps([doc])
    except SpecError as err:
        refusal = err.errors  # a clean refusal, one line per problem
        assert refusal
        return
    assert store_round_trip(spec) == spec
    assert bus_round_trips(spec) == [spec, spec]
    assert AppSpec.model_validate(spec.model_dump()) == spec


@settings(max_examples=300, deadline=None)
@given(numbers)
def test_every_number_anywhere_is_a_clean_outcome(value: Any) -> None:
    """One extreme number in each numeric place of a valid spec."""
    places: list[dict[str, Any]] = [
        {"replicas": value},
        {"resources": {"cpu": value}},
        {"resources": {"memory": value}},
        {"resources": {"cpu_limit": value}},
        {"resources": {"memory_limit": value}},
        {"ports": {"http": value}},
        {"ports": {"http": 80}, "route": {"port": value}},
        {"health": {"readiness": {"exec": ["t"], "interval": value}}},
        {"health": {"readiness": {"exec": ["t"], "failures": value}}},
        {"health": {"liveness": {"tcp": value}}},
        {"update": {"max_surge": value, "canary": value, "progress_deadline": value}},
        {"placement": {"max_per_node": value}},
        {"autoscale": {"min": 0, "max": value, "target": {"rps_per_replica": value}}},
        {"autoscale": {"max": 3, "target": {"cpu_utilization": value}}},
        {"termination": {"drain": value, "grace": value}},
        {"env": {"N": value}},
    ]
    for fields in places:
        try:
            (spec,) = validate_apps([{"name": "a", "image": "x", **fields}])
        except SpecError:
            continue
        assert store_round_trip(spec) == spec
        assert bus_round_trips(spec) == [spec, spec]


yaml_scalars = st.sampled_from(
    [
        ".nan",
        ".inf",
        "-.inf",
        "1e999",
        "1e30",
        str(10**30),
        str(2**64),
        "-0.0",
        "NO",
        "0755",
        "1.10",
        "1:30",
        "1m30s",
        "512m",
        "512M",
        '"\\ud800"',
        "~",
        "",
        "[1, 2]",
        "{a: 1}",
        "*nowhere",
        "!!binary aGk=",
        "!!python/object:os.system x",
        "&a [*a]",
    ]
)
yaml_places = st.sampled_from(
    [
        "replicas: {}",
        "resources: {{cpu: {}}}",
        "resources: {{memory: {}}}",
        "env: {{A: {}}}",
        "labels: {{a: {}}}",
        "args: [{}]",
        "user: {}",
        "ports: {{http: {}}}",
        "health: {{readiness: {{exec: [t], interval: {}}}}}",
        "health: {{readiness: {{exec: [t], failures: {}}}}}",
        "update: {{canary: {}}}",
        "termination: {{grace: {}}}",
        "autoscale: {{max: 3, target: {{rps_per_replica: {}}}}}",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(yaml_places, yaml_scalars), min_size=1, max_size=3, unique_by=lambda t: t[0])
)
def test_a_spec_file_validates_or_is_refused_cleanly(fields: list[tuple[str, str]]) -> None:
    """From the file's text on: nothing but a SpecError, or a spec that round-trips."""
    text = "name: a\nimage: x\n" + "".join(place.format(v) + "\n" for place, v in fields)
    try:
        (spec,) = load_specs(text, "apps.yaml")
    except SpecError as err:
        refusal = err.errors
        assert refusal
        assert all(line.startswith("apps.yaml") for line in refusal)
        return
    assert store_round_trip(spec) == spec
    assert bus_round_trips(spec) == [spec, spec]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_spec_or_a_clean_refusal(text: str) -> None:
    try:
        load_specs(text, "fuzz.yaml")
    except SpecError as err:
        refusal = err.errors
        assert refusal
