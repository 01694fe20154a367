"""The JSON Schema made from the API models (``nbscale_server/schema.py``), from which the
sidebar's TypeScript types are generated: what each Python form becomes, and that the real
models' schema is one a standard validator accepts. (That the server's responses match it:
tests/test_server_api.py; that the committed TypeScript is the generated one:
tests/test_sidebar.py.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

from nbscale_server import models
from nbscale_server.schema import read_classes, schema

SOURCE = '''
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Colour = Literal["red", "green"]


class ThingModel(TypedDict):
    """A thing, with ``code``."""

    id: str  # "th-..."
    # what colour it is,
    # over two lines
    colour: Colour
    size: int | None
    tags: list[str]
    extra: dict[str, Any]
    note: NotRequired[str]
    kind: Literal["thing"]


class Patch(TypedDict, total=False):
    size: int


class BigThingModel(ThingModel):
    """A thing with more."""

    weight: float  # kilograms
    parts: list[ThingModel]


Message = ThingModel | BigThingModel
'''


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    path = tmp_path / "sample_models.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("sample_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sample_models", module)
    spec.loader.exec_module(module)
    return module


def test_each_python_form_has_its_json_schema(module):
    defs = schema(module)["$defs"]
    assert defs["Colour"] == {"title": "Colour", "type": "string", "enum": ["red", "green"]}
    thing = defs["IThing"]
    assert thing["title"] == "IThing" and thing["description"] == "A thing, with `code`."
    assert thing["additionalProperties"] is False
    props = thing["properties"]
    assert props["id"] == {"type": "string", "description": '"th-..."'}
    assert props["colour"] == {"$ref": "#/$defs/Colour"}  # the alias, by name
    assert props["size"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["extra"] == {"type": "object", "additionalProperties": {}}
    assert props["kind"] == {"type": "string", "const": "thing"}
    assert thing["required"] == ["id", "colour", "size", "tags", "extra", "kind"]
    assert defs["IPatch"]["required"] == []  # total=False


def test_a_subclass_repeats_its_base_with_the_base_comments(module):
    big = schema(module)["$defs"]["IBigThing"]
    assert list(big["properties"]) == [
        *schema(module)["$defs"]["IThing"]["properties"],
        "weight",
        "parts",
    ]
    assert big["properties"]["weight"]["description"] == "kilograms"
    assert big["properties"]["parts"] == {"type": "array", "items": {"$ref": "#/$defs/IThing"}}
    assert big["properties"]["id"]["description"] == '"th-..."'
    assert "note" not in big["required"] and "weight" in big["required"]


def test_union_aliases_are_named_and_everything_is_reachable(module):
    result = schema(module)
    assert result["$defs"]["Message"]["anyOf"] == [
        {"$ref": "#/$defs/IThing"},
        {"$ref": "#/$defs/IBigThing"},
    ]
    assert result["anyOf"] == [{"$ref": f"#/$defs/{name}"} for name in result["$defs"]]


def test_comments_above_and_beside_a_field_are_joined(module):
    thing = read_classes(SOURCE)["ThingModel"]
    assert thing.comments["colour"] == "what colour it is, over two lines"
    assert read_classes(SOURCE)["BigThingModel"].bases == ["ThingModel"]


def test_a_type_without_a_json_form_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bad_models.py"
    path.write_text("from typing import TypedDict\n\nclass Bad(TypedDict):\n    x: set[int]\n")
    spec = importlib.util.spec_from_file_location("bad_models", path)
    assert spec is not None and spec.loader is not None
    bad = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bad_models", bad)
    spec.loader.exec_module(bad)
    with pytest.raises(TypeError, match="no JSON Schema for set"):
        schema(bad)


def _validator(name: str) -> Any:
    full = schema(models)
    return jsonschema.Draft202012Validator({"$defs": full["$defs"], "$ref": f"#/$defs/{name}"})


def test_the_api_schema_is_valid_and_checks_what_it_says():
    jsonschema.Draft202012Validator.check_schema(schema(models))
    pool_settings = _validator("IAutoscalerSettings")
    ok = {
        "min_containers": 0,
        "max_containers": None,
        "buffer_containers": 0,
        "scaledown_window": 60.0,
    }
    assert pool_settings.is_valid(ok)
    assert not pool_settings.is_valid({**ok, "max_containers": "8"})
    assert not pool_settings.is_valid({**ok, "surprise": 1})  # a field models.py lacks
    event = {"type": "container-stopped", "pool_id": "pl-1", "exit_code": None}
    assert _validator("IChangeEvent").is_valid(event)  # NotRequired fields may be absent
    assert not _validator("IChangeEvent").is_valid({**event, "type": "container-exploded"})


def test_the_sidebar_refuses_the_container_counts_the_server_refuses():
    """The sidebar checks its autoscaler form before sending it, with its own copy of the
    largest count the server takes."""
    from pathlib import Path

    from nbscale_server.autoscaler import MAX_CONTAINERS

    source = Path(__file__).resolve().parent.parent / "labextension/src/validation.ts"
    assert f"export const MAX_CONTAINERS = {MAX_CONTAINERS};" in source.read_text()
