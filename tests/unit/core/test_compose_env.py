"""Compose variable interpolation and ``.env`` / ``env_file`` files (``core.compose_env``)."""

from __future__ import annotations

import pytest

from core.compose_env import InterpolationError, interpolate, parse_env_file

ENV = {"SET": "value", "EMPTY": "", "OTHER": "o"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$SET", "value"),
        ("${SET}", "value"),
        ("a${SET}b$SET.c", "avalueb" + "value.c"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${SET:-d}", "value"),
        ("${UNSET-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${SET:?must}", "value"),
        ("${EMPTY?must}", ""),
        ("${UNSET:-${OTHER}}", "o"),
        ("${UNSET:-${ALSO:-deep}-x}", "deep-x"),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("cost: $$5 and $$$SET", "cost: $5 and $value"),
        ("${UNSET:-a}}", "a}"),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


def test_unset_variables_are_empty_with_a_warning() -> None:
    warnings: list[str] = []
    assert interpolate("[$NOPE][${NOPE}][${ALSO}]", ENV, warnings) == "[][][]"
    assert warnings == ["NOPE", "ALSO"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("${UNSET:?set it please}", "required variable UNSET is missing a value: set it please"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value"),
        ("${UNSET?x}", "required variable UNSET is missing a value: x"),
        ("${SET", "is never closed"),
        ("${1BAD}", "not a variable name"),
        ("${SET/x/y}", "expected one of"),
        ("50$ off", "'$' must start a variable"),
    ],
)
def test_interpolation_errors(text: str, error: str) -> None:
    with pytest.raises(InterpolationError, match=error.replace("$", r"\$").replace("(", r"\(")):
        interpolate(text, ENV)


def test_env_files() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PLAIN=value # trailing comment",
            "export EXPORTED=yes",
            "SINGLE='$NOT ${INTERPOLATED} # kept'",
            'DOUBLE="line\\nnext ${PLAIN} \\"q\\""',
            "REF=${PLAIN}-${FROM_OUTSIDE}",
            "FROM_OUTSIDE",
            "NOT_OUTSIDE",
            "EMPTY=",
            "SPACED = spaced ",
        ]
    )
    assert parse_env_file(text, ".env", {"FROM_OUTSIDE": "out"}) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SINGLE": "$NOT ${INTERPOLATED} # kept",
        "DOUBLE": 'line\nnext value "q"',
        "REF": "value-out",
        "FROM_OUTSIDE": "out",
        "EMPTY": "",
        "SPACED": "spaced",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1X=a", r"\.env, line 1: '1X' is not a variable name"),
        ("A=ok\nB='open", r"\.env, line 2: a single quote is never closed"),
        ('B="open', r"\.env, line 1: a double quote is never closed"),
        ("C=${NOPE:?needed}", r"\.env, line 1: required variable NOPE"),
    ],
)
def test_env_file_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_env_file(text, ".env")
