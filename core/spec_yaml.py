"""Reading spec files (YAML or JSON) so that every scalar keeps the meaning its writer saw.

PyYAML's ``safe_load`` types plain scalars by YAML 1.1: ``NO`` is ``false``, ``0755`` is
493, ``1:30`` is 90, ``1.10`` is the float 1.1. Here:

- scalars are typed by the YAML 1.2 core schema (what compose's YAML parser and JSON do):
  only ``true``/``false`` are booleans, ``0755`` is decimal, ``0o755`` octal, ``1:30`` text;
- a plain scalar that lands where the model wants text (an env value, a label, a command
  argument, a user...) keeps the exact text written: ``NO``, ``1.10``, ``0755``. This is how
  Kubernetes and compose users read their files; nothing changes meaning on the way in;
- a key given twice in one mapping is an error (PyYAML keeps the last silently);
- every error names the source and the line.

``read_documents`` returns the documents as plain data, and for each app document a map
from field paths to the line where each field is written (for error messages).
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from core.errors import SpecError

Path = tuple[int | str, ...]

_STR = "tag:yaml.org,2002:str"
_TYPED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_MERGE = "tag:yaml.org,2002:merge"


class _Core12Loader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader whose implicit types are the YAML 1.2 core schema's (plus ``<<`` merges)."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        text = text.lstrip("+-")
        if text.startswith("0o"):
            return sign * int(text[2:], 8)
        if text.startswith("0x"):
            return sign * int(text[2:], 16)
        return sign * int(text, 10)


def _resolver(tag: str, pattern: str, first: list[str]) -> None:
    _Core12Loader.add_implicit_resolver(tag, re.compile(pattern, re.X), first)


_resolver("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF"))
_resolver(
    "tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")
)
_resolver(
    "tag:yaml.org,2002:float",
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    list("-+.0123456789"),
)
_resolver("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""])
_resolver(_MERGE, r"^(?:<<)$", ["<"])
_Core12Loader.add_constructor("tag:yaml.org,2002:int", _Core12Loader.construct_yaml_int)


@dataclass
class Document:
    """One app document: its data, and the line (1-based) of each field path in it."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path``, or of the nearest enclosing field that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


@contextmanager
def yaml_loader(text: str, where: str, what: str = "YAML or JSON") -> Iterator[_Core12Loader]:
    """A YAML 1.2 core loader over ``text`` for the block; every YAML error in it (and a
    document nested too deeply to build) becomes a ``SpecError`` naming ``where`` and the
    line. The loader is disposed at the end."""
    try:
        loader = _Core12Loader(text)
    except yaml.YAMLError as err:
        raise SpecError([_unmarked(err, text, where)]) from err
    try:
        yield loader
    except yaml.MarkedYAMLError as err:
        raise SpecError([_marked(err, where)]) from err
    except yaml.YAMLError as err:
        raise SpecError([_unmarked(err, text, where)]) from err
    except RecursionError as err:
        raise SpecError([f"{where}: not valid {what}: nested too deeply"]) from err
    finally:
        loader.dispose()


def text_document(node: yaml.Node) -> Any:
    """The document of ``node`` with every scalar as the text written (what PyYAML's
    ``BaseLoader`` builds), from the node already composed: the text is parsed once.
    Build it before the typed document: typed construction merges ``<<`` keys into the
    node itself."""
    return yaml.constructor.BaseConstructor().construct_document(node)


def read_documents(text: str, source: str, model: type[BaseModel]) -> list[Document]:
    """Every app of ``text``: YAML documents (``---``), each one app, a list of apps, or
    ``{apps: [...]}``; JSON is read the same way. Raise ``SpecError`` naming file and line."""
    with yaml_loader(text, source or "input") as loader:
        roots: list[yaml.Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                roots.append(node)
        apps = [app for root in roots for app in _app_nodes(root)]
        problems: list[str] = []
        for app in apps:
            _check_keys(app, source or "input", problems, set())
        if problems:
            raise SpecError(problems)
        out = []
        for app in apps:
            doc = Document(data=None)
            _keep_text(app, model, (), doc.lines, set())
            doc.data = loader.construct_document(app)
            if doc.data is not None:
                out.append(doc)
        return out


def _app_nodes(root: yaml.Node) -> list[yaml.Node]:
    if isinstance(root, yaml.SequenceNode):
        return list(root.value)
    if isinstance(root, yaml.MappingNode) and len(root.value) == 1:
        key, value = root.value[0]
        if _scalar(key) == "apps" and isinstance(value, yaml.SequenceNode):
            return list(value.value)
    if isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null":
        return []
    return [root]


def _scalar(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _check_keys(node: yaml.Node, where: str, problems: list[str], seen: set[int]) -> None:
    """A key given twice in one mapping is an error (YAML says keys are unique)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                line = key.start_mark.line + 1
                earlier = first.get((key.tag, key.value))
                if earlier is None:
                    first[(key.tag, key.value)] = line
                else:
                    problems.append(
                        f"{where}, line {line}: key {key.value!r} is given twice in one "
                        f"mapping (first at line {earlier})"
                    )
            _check_keys(key, where, problems, seen)
            _check_keys(value, where, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_keys(item, where, problems, seen)


def _keep_text(
    node: yaml.Node, tp: Any, path: Path, lines: dict[Path, int], seen: set[tuple[int, int]]
) -> None:
    """Walk ``node`` along the model type ``tp``: record the line of every field path, and
    turn plain scalars that YAML typed (bool, int, float) back into their text where the
    model wants a string."""
    lines.setdefault(path, node.start_mark.line + 1)
    if (id(node), id(tp)) in seen:
        return
    seen.add((id(node), id(tp)))
    kind = _kind(tp)
    if isinstance(node, yaml.ScalarNode):
        if kind != "str" and _kind(_item_type(tp)) == "str":
            kind = "str"  # one text where a list of texts may be given (constraints)
        if kind == "str" and _plain_typed(node):
            node.tag = _STR
        return
    if isinstance(node, yaml.SequenceNode):
        item = _item_type(tp)
        for i, element in enumerate(node.value):
            _keep_text(element, item, (*path, i), lines, seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    fields = _model_fields(tp)
    key_type, value_type = _dict_types(tp)
    for key, value in node.value:
        name = _scalar(key)
        if key.tag == _MERGE:
            _keep_text(value, tp, path, lines, seen)
            continue
        child: Any = value_type
        if fields is not None:
            child = fields.get(name) if name is not None else None
        elif _kind(key_type) == "str" and _plain_typed(key):
            key.tag = _STR  # a text key written as a number (labels: {1: a})
        key_path = (*path, name) if name is not None else path
        lines.setdefault(key_path, key.start_mark.line + 1)
        _keep_text(value, child, key_path, lines, seen)


def _plain_typed(node: yaml.Node) -> bool:
    """A plain (unquoted) scalar that YAML typed as a boolean or a number."""
    return isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in _TYPED


def _unwrap(tp: Any) -> list[Any]:
    """The alternatives of ``tp``: ``Annotated`` and ``Optional`` removed, unions split."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(tp):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [tp]


def _kind(tp: Any) -> str:
    """``"str"`` when every alternative of ``tp`` is text, else ``"other"``."""
    alternatives = _unwrap(tp)
    if alternatives and all(alt is str for alt in alternatives):
        return "str"
    if (
        alternatives
        and all(get_origin(alt) is Literal for alt in alternatives)
        and all(isinstance(v, str) for alt in alternatives for v in get_args(alt))
    ):
        return "str"
    return "other"


def _item_type(tp: Any) -> Any:
    for alt in _unwrap(tp):
        if get_origin(alt) in (list, tuple, set, frozenset) and get_args(alt):
            return get_args(alt)[0]
    return Any


def _dict_types(tp: Any) -> tuple[Any, Any]:
    for alt in _unwrap(tp):
        if get_origin(alt) is dict and get_args(alt):
            key, value = get_args(alt)
            return key, value
    return Any, Any


def _model_fields(tp: Any) -> dict[str, Any] | None:
    for alt in _unwrap(tp):
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            return {name: info.annotation for name, info in alt.model_fields.items()}
    return None


def _marked(err: yaml.MarkedYAMLError, where: str) -> str:
    mark = err.problem_mark or err.context_mark
    at = f"{where}, line {mark.line + 1}, column {mark.column + 1}" if mark else where
    what = err.problem or "invalid"
    if err.context:
        context = err.context
        if err.context_mark is not None and err.context_mark is not mark:
            context += f" at line {err.context_mark.line + 1}"
        what += f" ({context})"
    return f"{at}: not valid YAML or JSON: {what}"


def _unmarked(err: yaml.YAMLError, text: str, where: str) -> str:
    position = getattr(err, "position", None)
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = getattr(err, "reason", str(err))
        return f"{where}, line {line}, column {column}: not valid YAML or JSON: {reason}"
    return f"{where}: not valid YAML or JSON: {err}"
