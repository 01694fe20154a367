"""The JSON Schema of the API's models, made from ``models.py``: their one source.

Each TypedDict becomes a closed object schema titled with the TypeScript name the sidebar
uses (``PoolModel`` -> ``IPool``: an ``I``, without ``Model``); its docstring and its fields'
comments become descriptions; ``NotRequired`` fields and those of a ``total=False`` class are
optional; a subclass repeats its base's fields (the schema stays plain JSON Schema, which any
validator checks). Every ``Literal`` or union alias of the module (``InputStatus``,
``EventsMessage``) is a named definition that fields refer to. The root is the union of all
of them, so that each is a named, reachable type.

``scripts/gen-contracts`` feeds it to json-schema-to-typescript, which writes
``labextension/src/models.ts``; ``python -m nbscale_server.schema`` prints it.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
ROOT = "ApiModel"
_PRIMITIVES: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


def ts_name(model: type) -> str:
    """The TypeScript interface of a TypedDict: ``PoolModel`` -> ``IPool``."""
    return "I" + model.__name__.removesuffix("Model")


def description(doc: str | None) -> str | None:
    """A docstring or comment as a description: reST's double backquotes made single."""
    return inspect.cleandoc(doc).replace("``", "`") if doc else None


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


@dataclass
class ClassSource:
    """What the source says of a class and a TypedDict forgets at run time."""

    bases: list[str]
    fields: list[str]  # its own, in order
    comments: dict[str, str] = field(default_factory=dict)  # by field


def read_classes(source: str) -> dict[str, ClassSource]:
    """Each top-level class of ``source``: its bases, its own fields and their comments
    (the comment lines right above a field, then those on its own lines, joined)."""
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    classes = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [base.id for base in node.bases if isinstance(base, ast.Name)]
        cls = classes[node.name] = ClassSource(bases, [])
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            cls.fields.append(stmt.target.id)
            above: list[str] = []
            line = stmt.lineno - 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            end = stmt.end_lineno or stmt.lineno
            own = [comments[n] for n in range(stmt.lineno, end + 1) if n in comments]
            if above or own:
                cls.comments[stmt.target.id] = " ".join(above + own)
    return classes


class _Converter:
    def __init__(self, module: types.ModuleType) -> None:
        names = vars(module)
        self.models = {
            name: value
            for name, value in names.items()
            if typing.is_typeddict(value) and value.__module__ == module.__name__
        }
        # a hint equal to an alias of the module is written as a reference to it
        self.aliases = {
            name: value
            for name, value in names.items()
            if get_origin(value) in (Literal, Union, types.UnionType) and not name.startswith("_")
        }
        self.classes = read_classes(inspect.getsource(module))

    def hint(self, hint: Any, alias_ok: bool = True) -> dict[str, Any]:
        if alias_ok:
            for name, alias in self.aliases.items():
                if hint == alias:
                    return _ref(name)
        if hint in _PRIMITIVES:
            return dict(_PRIMITIVES[hint])
        if typing.is_typeddict(hint):
            return _ref(ts_name(hint))
        origin, args = get_origin(hint), get_args(hint)
        if origin in (NotRequired, Required):
            return self.hint(args[0])
        if origin is Literal:
            kind = {"type": "string"} if all(isinstance(a, str) for a in args) else {}
            return {**kind, "const": args[0]} if len(args) == 1 else {**kind, "enum": list(args)}
        if origin in (Union, types.UnionType):
            return {"anyOf": [self.hint(arg) for arg in args]}
        if origin is list:
            return {"type": "array", "items": self.hint(args[0])}
        if origin is dict and args[0] is str:
            return {"type": "object", "additionalProperties": self.hint(args[1])}
        raise TypeError(f"no JSON Schema for {hint!r}")

    def _declaring(self, model: str, name: str) -> str:
        """The class (``model`` or one of its bases) that declares field ``name``."""
        cls = self.classes[model]
        if name in cls.fields:
            return model
        bases = [b for b in cls.bases if b in self.models]
        found = (b for b in bases if name in typing.get_type_hints(self.models[b]))
        return self._declaring(next(found), name)

    def model(self, name: str, model: type) -> dict[str, Any]:
        schema: dict[str, Any] = {"title": ts_name(model), "type": "object"}
        if (doc := description(model.__doc__)) is not None:
            schema["description"] = doc
        properties, required = {}, []
        for key, hint in typing.get_type_hints(model, include_extras=True).items():
            declaring = self._declaring(name, key)
            properties[key] = self.hint(hint)
            comment = self.classes[declaring].comments.get(key)
            # json-schema-to-typescript makes a $ref with a description a type of its own
            if comment and "$ref" not in properties[key]:
                properties[key]["description"] = description(comment)
            if _required(hint, self.models[declaring]):
                required.append(key)
        schema.update(properties=properties, required=required, additionalProperties=False)
        return schema

    def schema(self) -> dict[str, Any]:
        defs = {
            name: {"title": name, **self.hint(value, alias_ok=False)}
            for name, value in self.aliases.items()
        }
        defs |= {ts_name(model): self.model(name, model) for name, model in self.models.items()}
        return {
            "$schema": JSON_SCHEMA,
            "title": ROOT,
            "description": "Any JSON model of the nbscale API.",
            "anyOf": [_ref(name) for name in defs],
            "$defs": defs,
        }


def _required(hint: Any, declaring: type) -> bool:
    """Whether a field is required. (``__required_keys__`` cannot tell, in Python 3.11, for a
    module with postponed annotations: ``NotRequired`` is still a string when it is made.)"""
    origin = get_origin(hint)
    total: bool = declaring.__total__  # type: ignore[attr-defined]
    return origin is Required or (origin is not NotRequired and total)


def schema(module: types.ModuleType | None = None) -> dict[str, Any]:
    """The JSON Schema of ``module``'s models (default: ``nbscale_server.models``)."""
    if module is None:
        from . import models

        module = models
    return _Converter(module).schema()


if __name__ == "__main__":
    json.dump(schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
