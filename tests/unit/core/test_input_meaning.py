"""Input keeps the meaning its writer saw: env scalars keep their text, memory units are
Docker's (or refused as ambiguous), compound durations parse, YAML errors name file and line,
and no number goes past its bounds."""

from __future__ import annotations

import re

import pytest

from core.errors import SpecError
from core.spec import AppSpec, load_specs, parse_documents, validate_apps
from core.units import MAX_MEMORY, parse_cpu, parse_duration, parse_memory

# -- env scalars ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "value"),
    [
        # the issue's cases: YAML 1.1 made them false, 1.1 and 493
        ("NO", "NO"),
        ("1.10", "1.10"),
        ("0755", "0755"),
        # other YAML 1.1 booleans, numbers and dates
        ("yes", "yes"),
        ("off", "off"),
        ("y", "y"),
        ("true", "true"),
        ("False", "False"),
        ("1_000", "1_000"),
        ("1:30", "1:30"),
        ("0x1F", "0x1F"),
        ("0o17", "0o17"),
        ("1e3", "1e3"),
        ("+1", "+1"),
        ("-0", "-0"),
        (".5", ".5"),
        (".inf", ".inf"),
        (".nan", ".nan"),
        ("2024-01-01", "2024-01-01"),
        ("8080", "8080"),
        ("007", "007"),
        ("'quoted'", "quoted"),
        ('"1.10"', "1.10"),
        ("info", "info"),
        ('""', ""),
    ],
)
def test_env_values_keep_the_text_written(written: str, value: str) -> None:
    (spec,) = load_specs(f"name: a\nimage: x\nenv:\n  V: {written}\n")
    assert spec.env == {"V": value}


def test_the_issue_env_line_in_flow_style_and_json() -> None:
    (spec,) = load_specs("name: a\nimage: x\nenv: {COUNTRY: NO, VERSION: 1.10, MODE: 0755}\n")
    assert spec.env == {"COUNTRY": "NO", "VERSION": "1.10", "MODE": "0755"}
    (spec,) = load_specs('{"name": "a", "image": "x", "env": {"VERSION": 1.10, "ON": true}}')
    assert spec.env == {"VERSION": "1.10", "ON": "true"}


def test_the_text_is_kept_wherever_the_spec_wants_text() -> None:
    text = """
name: a
image: x
command: [sleep, 10]
args: [--ratio, 1.50, --octal, 0755]
user: 1000
working_dir: /srv
labels: {version: 1.10, enabled: yes}
placement: {constraints: {rack: 07}}
"""
    (spec,) = load_specs(text)
    assert spec.command == ["sleep", "10"]
    assert spec.args == ["--ratio", "1.50", "--octal", "0755"]
    assert spec.user == "1000"
    assert spec.labels == {"version": "1.10", "enabled": "yes"}
    assert spec.placement.constraints == {"rack": ["07"]}


def test_numbers_and_booleans_follow_yaml_1_2_elsewhere() -> None:
    text = "name: a\nimage: x\nreplicas: 010\nupdate: {auto_rollback: no, max_surge: 0o2}\n"
    (spec,) = load_specs(text)
    assert spec.replicas == 10  # YAML 1.1 read 010 as octal 8
    assert spec.update.auto_rollback is False  # "no" is text, read as a boolean by the model
    assert spec.update.max_surge == 2
    with pytest.raises(SpecError, match="interval: invalid duration '1:30'"):
        # YAML 1.1 made 1:30 the integer 90 (sexagesimal)
        load_specs("name: a\nimage: x\nhealth: {readiness: {exec: [t], interval: 1:30}}\n")


def test_merge_keys_still_work_and_keep_text() -> None:
    text = """
apps:
  - &base {name: a, image: x, env: {V: 1.10}}
  - <<: *base
    name: b
"""
    a, b = load_specs(text)
    assert a.env == b.env == {"V": "1.10"}
    assert b.name == "b"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "env value true is a boolean, not text; write it in quotes"),
        (1.1, "env value 1.1 is a number whose text is lost (1.10 becomes 1.1)"),
        (None, "env values must be text, got NoneType"),
        ([1], "env values must be text, got list"),
        ("a\0b", "a NUL character cannot be passed to a process"),
    ],
)
def test_typed_env_values_from_the_bus_are_refused_naming_the_field(
    value: object, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        validate_apps([{"name": "a", "image": "x", "env": {"FLAG": value}}])
    assert info.value.errors[0].startswith(f"app 1 (a): env.FLAG: {message}"), info.value.errors


def test_integers_from_the_bus_are_exact_text() -> None:
    (spec,) = validate_apps([{"name": "a", "image": "x", "env": {"N": 10**20}}])
    assert spec.env == {"N": "100000000000000000000"}


def test_null_env_value_is_an_error_with_its_line() -> None:
    with pytest.raises(SpecError) as info:
        load_specs("name: a\nimage: x\nenv:\n  V: 1\n  W:\n", "apps.yaml")
    assert info.value.errors == [
        "apps.yaml document 1 (a): env.W: env values must be text, got NoneType (line 5)"
    ]


# -- memory --------------------------------------------------------------------------

KI, MI, GI, TI = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("512m", 512 * MI),  # the issue's case: Docker's and compose's meaning
        ("1g", GI),
        ("64k", 64 * KI),
        ("2t", 2 * TI),
        ("512mb", 512 * MI),
        ("1gb", GI),
        ("128Mi", 128 * MI),
        ("1Gi", GI),
        ("4Ki", 4 * KI),
        ("1Ti", TI),
        ("128MiB", 128 * MI),
        ("1.5g", 3 * GI // 2),
        ("1.5k", 1536),
        ("0.3k", 307),  # fractions of a byte are dropped, as Docker does
        ("100", 100),
        ("100b", 100),
        ("100B", 100),
        (" 64 Mi ", 64 * MI),
        (134217728, 128 * MI),
        (1.5e9, 1_500_000_000),
        ("256Ti", MAX_MEMORY),
    ],
)
def test_memory_units(written: object, size: int) -> None:
    assert parse_memory(written) == size


@pytest.mark.parametrize("written", ["512M", "1G", "64K", "1T", "512MB", "1GB", "10KB"])
def test_uppercase_si_memory_units_are_refused_as_ambiguous(written: str) -> None:
    with pytest.raises(ValueError, match=r"ambiguous: Docker reads .* Kubernetes as 1000"):
        parse_memory(written)


def test_the_ambiguity_error_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="ambiguous") as info:
        parse_memory("512M")
    assert str(info.value) == (
        "memory size '512M' is ambiguous: Docker reads M as 1024^2 bytes, Kubernetes as "
        "1000^2; write 512Mi (or Docker's 512m) for 1024^2, or a number of bytes"
    )


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("x", "invalid memory size 'x'"),
        ("12x", "invalid memory size '12x': unknown unit 'x'"),
        ("1Mb", "unknown unit 'Mb'"),
        ("1e30", "invalid memory size '1e30'"),
        ("-1", "memory must not be negative"),
        (-1, "memory size must not be negative"),
        (True, "invalid memory size True"),
        (None, "invalid memory size None"),
        (float("nan"), "it must be a finite number"),
        (float("inf"), "it must be a finite number"),
        (1e30, "larger than the maximum of 256Ti"),
        (10**30, "larger than the maximum of 256Ti"),
        pytest.param(10**5000, "<an integer of 16610 bits> is larger", id="10**5000"),
        ("257Ti", "larger than the maximum of 256Ti"),
        pytest.param("1" * 5000, "invalid memory size '1111", id="5000-digits"),
    ],
)
def test_bad_memory_sizes(written: object, message: str) -> None:
    with pytest.raises(ValueError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_memory(written)


def test_spec_memory_uses_docker_units_and_refuses_ambiguity_naming_the_field() -> None:
    (spec,) = load_specs("name: a\nimage: x\nresources: {memory: 512m, memory_limit: 1g}\n")
    assert (spec.resources.memory, spec.resources.memory_limit) == (512 * MI, GI)
    with pytest.raises(SpecError) as info:
        load_specs("name: a\nimage: x\nresources:\n  memory: 512M\n", "a.yaml")
    assert info.value.errors[0].startswith(
        "a.yaml document 1 (a): resources.memory: memory size '512M' is ambiguous"
    )
    assert info.value.errors[0].endswith("(line 4)")


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("1m30s", 90.0),  # the issue's case
        ("1h2m3.5s", 3723.5),
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2m0.5s", 120.5),
        ("1s500ms", 1.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        ("1m 30s", 90.0),
        (" 5s ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("0.1", 0.1),
        (3, 3.0),
        (0.25, 0.25),
        (-0.0, 0.0),
        ("8760h", 365 * 24 * 3600.0),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("soon", "invalid duration 'soon'"),
        ("1m30", "invalid duration '1m30'"),  # a number without its unit
        ("30s1m", "give each unit once, the largest first"),
        ("1s1s", "give each unit once, the largest first"),
        ("1us1µs", "give each unit once, the largest first"),
        ("1d", "invalid duration '1d'"),
        ("s", "invalid duration 's'"),
        ("", "invalid duration ''"),
        ("1e3s", "invalid duration '1e3s'"),
        ("1e999", "invalid duration '1e999'"),
        ("-1s", "duration must not be negative"),
        (-1, "duration must not be negative"),
        (True, "invalid duration True"),
        ([1], "invalid duration [1]"),
        (float("nan"), "it must be a finite number"),
        (float("inf"), "it must be a finite number"),
        (10**30, "longer than the maximum of one year"),
        ("8761h", "longer than the maximum of one year"),
    ],
)
def test_bad_durations(written: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(written)


@pytest.mark.parametrize(
    ("written", "cores"),
    [("250m", 0.25), ("0.5", 0.5), (2, 2.0), ("1000m", 1.0), ("10000", 10_000.0)],
)
def test_cpu_amounts(written: object, cores: float) -> None:
    assert parse_cpu(written) == cores


@pytest.mark.parametrize(
    "written", ["lots", "nan", "inf", "1e3", "-1", float("nan"), float("inf"), 10**30, "10001"]
)
def test_bad_cpu_amounts(written: object) -> None:
    with pytest.raises(ValueError, match="cpu"):
        parse_cpu(written)


def test_spec_durations_and_cpu() -> None:
    text = (
        "name: a\nimage: x\nresources: {cpu: 250m}\n"
        "health: {readiness: {exec: [t], interval: 1m30s, timeout: 1s500ms}}\n"
        "termination: {grace: 1m}\n"
    )
    (spec,) = load_specs(text)
    assert spec.resources.cpu == 0.25
    assert spec.health.readiness is not None
    assert (spec.health.readiness.interval, spec.health.readiness.timeout) == (90.0, 1.5)
    assert spec.termination.grace == 60.0


# -- YAML errors name the file and the line ------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "apps.yaml, line 1, column 16: not valid YAML or JSON: "),
        ("name: a\nimage: x\n  bad: indent\n", "apps.yaml, line 3, column 6: not valid YAML"),
        ("name: a\nimage: *nowhere\n", "apps.yaml, line 2, column 8: not valid YAML or JSON: "),
        ("name: a\nimage: !custom x\n", "apps.yaml, line 2, column 8: not valid YAML or JSON: "),
        ("name: a\n\timage: x\n", "apps.yaml, line 2, column 1: not valid YAML or JSON: "),
        ("name: a\nimage: x\x00\n", "apps.yaml, line 2, column 9: not valid YAML or JSON: "),
        ('{"name": "a",\n "image": "x"\n', "apps.yaml, line 3, column 1: not valid YAML or JSON"),
    ],
)
def test_yaml_errors_name_the_file_and_the_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_specs(text, "apps.yaml")
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(message), info.value.errors


def test_a_key_given_twice_is_an_error_naming_both_lines() -> None:
    text = "name: a\nimage: x\nreplicas: 3\nenv: {A: 1, A: 2}\nreplicas: 5\n"
    with pytest.raises(SpecError) as info:
        parse_documents(text, "apps.yaml")
    assert info.value.errors == [
        "apps.yaml, line 4: key 'A' is given twice in one mapping (first at line 4)",
        "apps.yaml, line 5: key 'replicas' is given twice in one mapping (first at line 3)",
    ]


def test_validation_errors_carry_the_line_of_the_field() -> None:
    text = "name: a\nimage: x\nhealth:\n  readiness:\n    exec: [t]\n    interval: soon\n"
    with pytest.raises(SpecError) as info:
        load_specs(text, "apps.yaml")
    (error,) = info.value.errors
    assert error.startswith("apps.yaml document 1 (a): health.readiness.interval: invalid")
    assert error.endswith("(line 6)")


# -- bounds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"resources": {"cpu": ".nan"}}, "resources.cpu"),
        ({"resources": {"cpu": 1e999}}, "resources.cpu"),
        ({"resources": {"cpu": 0.0001}}, "resources.cpu"),
        ({"resources": {"memory": float("inf")}}, "resources.memory"),
        ({"resources": {"memory": 1e30}}, "resources.memory"),
        ({"replicas": 10**30}, "replicas"),
        ({"replicas": float("nan")}, "replicas"),
        ({"health": {"readiness": {"exec": ["t"], "failures": 10**30}}}, "failures"),
        ({"health": {"readiness": {"exec": ["t"], "interval": float("nan")}}}, "interval"),
        ({"health": {"readiness": {"exec": ["t"], "timeout": 1e999}}}, "timeout"),
        ({"ports": {"http": 80}, "health": {"readiness": {"tcp": 10**30}}}, "tcp"),
        ({"ports": {"http": 80}, "route": {"port": 70000}}, "route.port"),
        ({"update": {"max_surge": 2**64}}, "update.max_surge"),
        ({"update": {"canary": 2**63}}, "update.canary"),
        ({"update": {"progress_deadline": float("inf")}}, "progress_deadline"),
        ({"placement": {"max_per_node": 10**30}}, "placement.max_per_node"),
        ({"termination": {"grace": 10**30}}, "termination.grace"),
        (
            {"autoscale": {"max": 2, "target": {"rps_per_replica": float("inf")}}},
            "rps_per_replica",
        ),
        ({"autoscale": {"max": 2, "target": {"cpu_utilization": "nan%"}}}, "cpu_utilization"),
        ({"env": {"BIG": "x" * (2 * 1024**2)}}, "more than the maximum of 1 MiB"),
        ({"env": {"BAD": "\ud800"}}, "env.BAD: text is not valid Unicode"),
        ({"labels": {"k": "\udfff"}}, "labels.k: text is not valid Unicode"),
    ],
)
def test_numbers_past_their_bounds_are_clean_errors(fields: dict[str, object], where: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_apps([{"name": "a", "image": "x", **fields}])
    assert any(where in line for line in info.value.errors), info.value.errors


def test_the_issue_values_from_yaml_are_refused_not_stored() -> None:
    for value in (".nan", "1e999", ".inf", "-.inf"):
        with pytest.raises(SpecError, match=r"resources\.cpu"):
            load_specs(f"name: a\nimage: x\nresources: {{cpu: {value}}}\n")
    with pytest.raises(SpecError, match=r"resources\.memory"):
        load_specs("name: a\nimage: x\nresources: {memory: .inf}\n")
    with pytest.raises(SpecError, match=r"resources\.memory"):
        load_specs("name: a\nimage: x\nresources: {memory: 1e30}\n")
    big = 10**30
    with pytest.raises(SpecError, match="failures"):
        load_specs(f"name: a\nimage: x\nhealth: {{readiness: {{exec: [t], failures: {big}}}}}\n")


def test_bounds_at_their_limits_still_validate() -> None:
    spec = AppSpec.model_validate(
        {
            "name": "a",
            "image": "x",
            "replicas": 10_000,
            "resources": {"cpu": 0.001, "memory": "256Ti", "cpu_limit": 10_000},
            "termination": {"grace": "8760h"},
            "ports": {"http": 65535},
        }
    )
    assert spec.resources.memory == MAX_MEMORY
