"""Compose variables: interpolation of ``${VAR}`` forms, and ``.env`` / ``env_file`` files.

Interpolation follows the Compose Specification: ``$VAR`` and ``${VAR}``; ``${VAR:-default}``
(unset or empty), ``${VAR-default}`` (unset); ``${VAR:?message}`` / ``${VAR?message}`` (an
error naming the variable); ``${VAR:+other}`` / ``${VAR+other}``; defaults may themselves hold
variables (``${A:-${B:-x}}``); ``$$`` is a literal ``$``. An unset variable without a default
is the empty string, with a warning (as compose does). A ``$`` followed by anything else is an
error. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A ``$`` form that cannot be read, or a required variable that is missing."""


def interpolate(text: str, env: Mapping[str, str], warnings: list[str] | None = None) -> str:
    """``text`` with every variable replaced from ``env``; unset variables without a
    default become empty, and their names are added to ``warnings``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            end = _closing(text, i + 2)
            out.append(_braced(text[i + 2 : end], env, warnings))
            i = end + 1
        else:
            match = NAME.match(text, i + 1)
            if match is None:
                raise InterpolationError(
                    f"invalid interpolation in {text!r}: '$' must start a variable "
                    "($VAR or ${VAR}); write $$ for a literal '$'"
                )
            out.append(_lookup(match.group(), env, warnings))
            i = match.end()
    return "".join(out)


def _closing(text: str, start: int) -> int:
    """The index of the ``}`` closing a ``${`` whose body starts at ``start``."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"invalid interpolation in {text!r}: '${{' is never closed")


def _lookup(name: str, env: Mapping[str, str], warnings: list[str] | None) -> str:
    value = env.get(name)
    if value is None:
        if warnings is not None and name not in warnings:
            warnings.append(name)
        return ""
    return value


def _braced(body: str, env: Mapping[str, str], warnings: list[str] | None) -> str:
    match = NAME.match(body)
    if match is None:
        raise InterpolationError(f"invalid interpolation '${{{body}}}': not a variable name")
    name = match.group()
    rest = body[match.end() :]
    if not rest:
        return _lookup(name, env, warnings)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(
            f"invalid interpolation '${{{body}}}': expected one of :- - :? ? :+ + after {name}"
        )
    argument = rest[len(operator) :]
    value = env.get(name)
    is_set = value is not None
    has_value = bool(value)
    present = has_value if operator.startswith(":") else is_set
    kind = operator[-1]
    if kind == "-":
        return value if present and value is not None else interpolate(argument, env, warnings)
    if kind == "+":
        return interpolate(argument, env, warnings) if present else ""
    if not present:
        message = interpolate(argument, env, warnings)
        raise InterpolationError(
            f"required variable {name} is missing a value" + (f": {message}" if message else "")
        )
    return value or ""


def parse_env_file(text: str, source: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A ``.env`` or ``env_file`` file: ``KEY=VALUE`` lines (``export KEY=VALUE`` too),
    ``#`` comments, values in single quotes (literal) or double quotes (``\\n``, ``\\t``,
    ``\\"``, ``\\\\`` escapes), an unquoted value ending at `` #``. Unquoted and
    double-quoted values are interpolated from earlier lines, then ``env``. A line with a
    bare ``KEY`` takes the value of ``KEY`` in ``env``, if set. Raises ``ValueError``
    naming the file and line."""
    out: dict[str, str] = {}
    outer = env or {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not NAME.fullmatch(key):
            raise ValueError(f"{source}, line {number}: {key!r} is not a variable name")
        if not sep:
            if key in outer:
                out[key] = outer[key]
            continue
        value = value.strip()
        scope = {**outer, **out}
        try:
            if value.startswith("'"):
                end = value.find("'", 1)
                if end < 0:
                    raise ValueError("a single quote is never closed")
                out[key] = value[1:end]
            elif value.startswith('"'):
                text_value, _ = _double_quoted(value)
                out[key] = interpolate(text_value, scope)
            else:
                comment = value.find(" #")
                if comment >= 0:
                    value = value[:comment].rstrip()
                out[key] = interpolate(value, scope)
        except ValueError as err:
            raise ValueError(f"{source}, line {number}: {err}") from None
    return out


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}


def _double_quoted(value: str) -> tuple[str, int]:
    out: list[str] = []
    i = 1
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], "\\" + value[i + 1]))
            i += 2
            continue
        if char == '"':
            return "".join(out), i
        out.append(char)
        i += 1
    raise ValueError("a double quote is never closed")
