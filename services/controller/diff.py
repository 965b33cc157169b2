"""Field-level differences between two app specs, as short human-readable lines.

``diff_specs(old, new)`` -> ``["image: shoal-test/echo:v1 -> shoal-test/echo:v2",
"env.MODE: added (fast)", "replicas: 3 -> 5"]``. Used for ``apply`` results, ``shoal diff``
and the ``changes`` column of ``shoal rollout history``.

Values that look like credentials never appear in a line (the lines are stored with each
revision and shown to anyone who may read the app's history): a field whose name looks
like one (``env.DB_PASSWORD``, ``API_TOKEN``, an ``Authorization`` header...) is shown as
``changed (value hidden)``, and the password of a URL (``postgres://u:pw@db``) as ``***``.
Secrets proper are references (``secrets: [{name, version}]``): their lines show the name
and the version, never a value, which the spec does not hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from core.spec import TEMPLATE_FIELDS, AppSpec

MAX_VALUE = 60


#: Names of fields that usually hold a credential (matched anywhere in the name).
SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE|COOKIE|SESSION|SIGNATURE|SALT|DSN",
    re.IGNORECASE,
)
#: ``scheme://user:password@``: the password of a URL.
URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^\s@/]*@")
#: The same in a stored line whose value may have been shortened before the ``@``.
URL_PASSWORD_CUT = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^\s@/]*(@|\.\.\.)")
HIDDEN = "***"


#: The spec's maps whose keys the user names (the rest are the spec's own fields, such as
#: ``secrets`` and ``route.tls.key``, which hold references, not values).
FREE_FORM = frozenset({"env", "labels"})


def looks_secret(path: str) -> bool:
    """Whether the field at ``path`` (``env.DB_PASSWORD``) is named like a credential."""
    parent, _, name = path.rpartition(".")
    return parent.rpartition(".")[2] in FREE_FORM and bool(SECRET_NAME.search(name))


def scrub(value: Any, path: str = "") -> Any:
    """``value`` (at ``path``) with URL passwords masked and credential-named fields hidden."""
    if isinstance(value, str):
        return URL_PASSWORD.sub(rf"\g<1>{HIDDEN}@", value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            out[key] = HIDDEN if looks_secret(sub) else scrub(item, sub)
        return out
    if isinstance(value, list):
        return [scrub(v, path) for v in value]
    return value


def redact_line(line: str) -> str:
    """A diff line as it is shown: for lines stored before values were hidden, the same
    rules applied to the text (a credential-named field's value, a URL's password)."""
    path, sep, rest = line.partition(": ")
    if sep and " " not in path and looks_secret(path):
        if rest.startswith("added ("):
            return f"{path}: added (value hidden)"
        if rest.startswith("removed (was "):
            return f"{path}: removed (value was hidden)"
        return f"{path}: changed (value hidden)"
    return URL_PASSWORD_CUT.sub(rf"\g<1>{HIDDEN}\g<2>", line)


def redact_lines(lines: Iterable[str]) -> list[str]:
    return [redact_line(line) for line in lines]


def show(value: Any, path: str = "") -> str:
    """A value as it appears in a diff line: compact JSON, credentials hidden, shortened."""
    value = scrub(value, path)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) > MAX_VALUE:
        text = text[: MAX_VALUE - 3] + "..."
    return text


def diff_values(old: Any, new: Any, path: str = "") -> list[str]:
    """Recursive diff of two JSON-like values; maps are compared key by key."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                if new[key] is not None:
                    lines.extend(diff_values(None, new[key], sub))
            elif key not in new:
                if old[key] is not None:
                    lines.extend(diff_values(old[key], None, sub))
            else:
                lines.extend(diff_values(old[key], new[key], sub))
        return lines
    if _records(old) and _records(new) and len(old) == len(new):
        # lists of objects of the same length (secrets, volumes): field by field, so a new
        # secret version reads ``secrets[0].version: 1 -> 2``
        return [
            line
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for line in diff_values(a, b, f"{path}[{i}]")
        ]
    if old == new:
        return []
    if looks_secret(path):
        if old is None:
            return [f"{path}: added (value hidden)"]
        if new is None:
            return [f"{path}: removed (value was hidden)"]
        return [f"{path}: changed (value hidden)"]
    if old is None:
        return [f"{path}: added ({show(new, path)})"]
    if new is None:
        return [f"{path}: removed (was {show(old, path)})"]
    return [f"{path}: {show(old, path)} -> {show(new, path)}"]


def _records(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def spec_data(spec: AppSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def diff_specs(old: AppSpec, new: AppSpec) -> list[str]:
    """Every changed field of ``new`` relative to ``old``, template fields first."""
    a, b = spec_data(old), spec_data(new)
    lines = diff_values(a, b)

    def rank(line: str) -> int:
        top = line.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]  # secrets[0].version
        return 0 if top in TEMPLATE_FIELDS else 1

    return sorted(lines, key=rank)


def template_changed(old: AppSpec, new: AppSpec) -> bool:
    return old.template_hash() != new.template_hash()
