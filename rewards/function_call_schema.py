"""Function schemas and possible answers for the function-call verifier: validation, type names, type checks.

BFCL writes Python-flavoured type names in its function docs (``dict``, ``float``, ``tuple``, ``any``); OpenAI-style
tools use JSON Schema's (``object``, ``number``, ``array``). Both are accepted and mapped onto one set
(``TYPE_ALIASES``). Malformed input raises ``ValueError``/``TypeError`` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import json

# BFCL / JSON Schema type name -> the kind we check. "any" (and a missing type) accepts every value.
TYPE_ALIASES = {
    "dict": "object", "object": "object",
    "float": "number", "number": "number",
    "integer": "integer", "int": "integer",
    "string": "string", "str": "string",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "tuple": "array", "list": "array",
    "any": "any", "null": "null",
}


@dataclasses.dataclass
class ParamSchema:
    """One function's parameters: property schemas by name and the required names."""

    properties: dict
    required: list


def load_json(value, what: str):
    """``value`` itself, or the object its JSON text holds (parquet rows carry these as strings)."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"{what} is a string but not JSON") from None
    if hasattr(value, "tolist"):  # numpy object arrays from parquet
        return value.tolist()
    return value


def kind_of(schema: dict, where: str) -> list[str]:
    """The checked kinds a property schema allows (a JSON Schema type may be a list of names)."""
    names = schema.get("type", "any")
    names = names if isinstance(names, list) else [names]
    kinds = []
    for name in names:
        if not isinstance(name, str) or name.lower() not in TYPE_ALIASES:
            raise ValueError(f"{where}: unknown type {name!r}; known: {sorted(TYPE_ALIASES)}")
        kinds.append(TYPE_ALIASES[name.lower()])
    return kinds


def _validate_properties(properties, where: str) -> None:
    """Every property is a dict with a known type, nested object and array schemas included."""
    if not isinstance(properties, dict):
        raise ValueError(f"{where}.properties must be an object, got {type(properties).__name__}")
    for name, prop in properties.items():
        if not isinstance(prop, dict):
            raise ValueError(f"{where}.properties[{name!r}] must be an object")
        _validate_schema(prop, f"{where}.properties[{name!r}]")


def _validate_schema(schema: dict, where: str) -> None:
    kind_of(schema, where)
    if "properties" in schema:
        _validate_properties(schema["properties"], where)
    if isinstance(schema.get("items"), dict):
        _validate_schema(schema["items"], f"{where}.items")


def parse_tools(tools) -> dict[str, ParamSchema]:
    """Function name -> ParamSchema from BFCL function docs or OpenAI-style tools (a list, or its JSON)."""
    tools = load_json(tools, "tools")
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not tools:
        raise ValueError(f"tools must be a non-empty list of function schemas, got {type(tools).__name__}")
    out = {}
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            tool = tool["function"]
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise ValueError(f"tools[{i}] must be an object with a non-empty string 'name'")
        params = tool.get("parameters", {}) or {}
        where = f"tools[{i}] ({tool['name']}).parameters"
        if not isinstance(params, dict):
            raise ValueError(f"{where} must be an object")
        properties = params.get("properties", {}) or {}
        _validate_properties(properties, where)
        required = params.get("required", []) or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError(f"{where}.required must be a list of names")
        out[tool["name"]] = ParamSchema(dict(properties), list(required))
    return out


def parse_ground_truth(ground_truth) -> list[tuple[str, dict]]:
    """[(function name, {param: [allowed values]})] from a BFCL possible answer (a list, or its JSON)."""
    answers = load_json(ground_truth, "ground_truth")
    if not isinstance(answers, list) or not answers:
        raise ValueError(f"ground_truth must be a non-empty list of expected calls, got {type(answers).__name__}")
    out = []
    for i, entry in enumerate(answers):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"ground_truth[{i}] must be an object with exactly one function name as its key")
        (name, params), = entry.items()
        if not isinstance(params, dict):
            raise ValueError(f"ground_truth[{i}][{name!r}] must be an object of parameters")
        for param, allowed in params.items():
            if not isinstance(allowed, list):
                raise ValueError(f"ground_truth[{i}][{name!r}][{param!r}] must be a list of allowed values")
        out.append((name, params))
    return out


def _type_ok(value, kind: str) -> bool:
    """Whether ``value`` has checked kind ``kind`` (int is accepted for number; bool is never a number)."""
    if kind == "any":
        return True
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)  # object


def check_type(value, schema: dict, depth: int = 0) -> str | None:
    """None when ``value`` fits the property ``schema`` (nested items/properties too), else what is wrong."""
    kinds = kind_of(schema, "schema")
    matching = [k for k in kinds if _type_ok(value, k)]
    if not matching:
        return f"{type(value).__name__} given where the schema says {'/'.join(kinds)}"
    if depth > 16:  # the parser's depth guard already bounds this; a schema cannot make it recurse further
        return None
    if "array" in matching and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = check_type(item, schema["items"], depth + 1)
            if problem:
                return f"[{i}]: {problem}"
    if "object" in matching and isinstance(schema.get("properties"), dict):
        for key, item in value.items():
            if key in schema["properties"]:
                problem = check_type(item, schema["properties"][key], depth + 1)
                if problem:
                    return f"[{key!r}]: {problem}"
    return None
