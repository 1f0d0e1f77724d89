"""Generate the TrainingJob CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
every ``$ref`` inlined, no ``null`` types, ``exclusiveMinimum`` as a boolean, and bounds
on every string, list and map so that the API server can estimate the cost of CEL rules.
This module does that conversion and nothing else, so that the CRD can never drift from
the models (a test regenerates it and compares with ``crds/``).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from kubetrain.api import grammar, kubeyaml
from kubetrain.api import v1alpha1 as api

CRD_FILE_NAME = f"{api.GROUP}_{api.PLURAL}.yaml"

#: Bounds added where a model sets none: the API server refuses CEL rules whose cost it
#: cannot bound, and huge objects are a mistake anyway.
DEFAULT_MAX_LENGTH = 1024
DEFAULT_MAX_ITEMS = 256
DEFAULT_MAX_PROPERTIES = 256

_DROPPED_KEYS = {"title", "$defs"}
_CEL = "x-kubernetes-validations"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            rules = target.get(_CEL, []) + rest.pop(_CEL, [])
            target.update(rest)
            if rules:
                target[_CEL] = rules
            return _inline(target, defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _drop_null_variant(schema: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` becomes plain ``X``: absence, not null, means unset in Kubernetes."""
    variants = schema.get("anyOf")
    if not variants:
        return schema
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) == len(variants):
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(non_null) == 1:
        inner = dict(non_null[0])
        inner.update(merged)
        return inner
    merged["anyOf"] = non_null
    return merged


def _structural(schema: dict[str, Any], factory_default: Any = None) -> dict[str, Any]:
    schema = _drop_null_variant(dict(schema))
    for key in _DROPPED_KEYS:
        schema.pop(key, None)
    if schema.get("default", "absent") is None:
        schema.pop("default")

    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        schema.setdefault("maxLength", 64)
        return schema
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        # A free-form value (a filter's operand): any JSON, checked by the runtime.
        is_map = schema.pop("additionalProperties", None) is not None
        schema.pop("anyOf", None)
        schema.pop("type", None)
        if is_map:
            schema["type"] = "object"
        return schema

    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in schema and not isinstance(schema[bound], bool):
            schema["minimum" if bound == "exclusiveMinimum" else "maximum"] = schema[bound]
            schema[bound] = True

    kind = schema.get("type")
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if kind == "string" and "enum" not in schema:
        schema.setdefault("maxLength", DEFAULT_MAX_LENGTH)
    elif kind == "array":
        schema["items"] = _structural(schema.get("items", {}))
        schema.setdefault("maxItems", DEFAULT_MAX_ITEMS)
        if factory_default:
            schema.setdefault("default", factory_default)
    elif kind == "object" and "properties" in schema:
        props = schema["properties"]
        defaults = schema.pop("_factory_defaults", {})
        schema["properties"] = {
            name: _structural(sub, defaults.get(name)) for name, sub in props.items()
        }
        if factory_default is not None:
            schema.setdefault("default", {})
        schema.pop("additionalProperties", None)
    elif kind == "object":
        _keys_as_cel(schema)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            schema["additionalProperties"] = _structural(extra)
            schema.setdefault("maxProperties", DEFAULT_MAX_PROPERTIES)
    return schema


#: What a key grammar is called in the API server's message.
_KEY_GRAMMARS = {
    grammar.LABEL_KEY_PATTERN: "a label key ([DNS subdomain '/'] name of at most 63 characters)"
}


def _keys_as_cel(schema: dict[str, Any]) -> None:
    """pydantic says a map's key grammar with ``patternProperties``; a structural schema has
    none, so the value schema becomes ``additionalProperties`` and the key grammar a CEL rule."""
    patterns = schema.pop("patternProperties", None)
    names = schema.pop("propertyNames", {})
    if not patterns:
        return
    ((pattern, value_schema),) = patterns.items()
    schema["additionalProperties"] = value_schema
    limit = names.get("maxLength", DEFAULT_MAX_LENGTH)
    what = _KEY_GRAMMARS.get(pattern, f"matching {pattern}")
    rule = {
        "rule": f"self.all(k, k.size() <= {limit} && k.matches({_cel_string(pattern)}))",
        "message": f"each key must be {what}",
    }
    schema[_CEL] = [*schema.get(_CEL, []), rule]


def _cel_string(text: str) -> str:
    """A CEL raw string literal (no escapes to double)."""
    assert "'" not in text
    return f"r'{text}'"


def _factory_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Defaults that pydantic leaves out of JSON Schema because they come from a factory.

    A nested model gets ``{}`` so that the API server applies its fields' defaults; a
    non-empty list keeps its value; empty lists and maps stay unset.
    """
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.default_factory is None:
            continue
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            found[name] = {}
        elif isinstance(value, list) and value:
            found[name] = value
    return found


def _annotate_factory_defaults(
    schema: dict[str, Any], model: type[BaseModel], defs: dict[str, Any]
) -> None:
    """Walk models and their JSON Schema in step, marking factory defaults for _structural."""
    defaults = _factory_defaults(model)
    if defaults:
        schema["_factory_defaults"] = defaults
    for name, field in model.model_fields.items():
        sub_model = _model_in(field.annotation)
        if sub_model is None:
            continue
        sub_schema = _drop_null_variant(schema["properties"][name])
        ref = sub_schema.get("$ref")
        if ref:
            key = ref.split("/")[-1]
            _annotate_factory_defaults(defs[key], sub_model, defs)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    _annotate_factory_defaults(raw, model, defs)
    return _structural(_inline(raw, defs))


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "Lifecycle phase.",
    },
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".spec.model.type",
        "description": "Model family.",
    },
    {
        "name": "Progress",
        "type": "integer",
        "jsonPath": ".status.progress.percent",
        "description": "Overall progress in percent.",
    },
    {
        "name": "Metric",
        "type": "string",
        "jsonPath": ".status.keyMetric",
        "description": "The headline metric.",
    },
    {
        "name": "Pool",
        "type": "string",
        "jsonPath": ".spec.cluster.nodePool",
        "priority": 1,
        "description": "Node pool.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": ".status.reason",
        "priority": 1,
        "description": "Why the job is in its phase.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The whole CRD as a dict, ready for YAML."""
    spec_schema = openapi_schema(api.TrainingJobSpec)
    status_schema = openapi_schema(api.TrainingJobStatus)
    status_schema["description"] = "Observed state, written by the operator and the runtime."
    spec_schema["description"] = "What to train, where, and how the job is run."
    root = {
        "type": "object",
        "description": "A TrainingJob trains a PyTorch model on a Ray cluster that kubetrain "
        "creates on a node pool, and reports progress, metrics and artifacts in its status.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "kubetrain.io/v1alpha1"},
            "kind": {"type": "string", "description": "TrainingJob"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {api.MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters "
                "(child object names add a suffix)",
            },
            {
                "rule": f"self.metadata.name.matches({_cel_string(api.NAME_PATTERN)})",
                "message": "metadata.name must start with a letter and hold only lowercase "
                "letters, digits and '-' (the Ray cluster's Services take the name)",
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "kubetrain",
                "app.kubernetes.io/part-of": "kubetrain",
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["kubetrain", "all"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `kubetrain crd` from kubetrain/api/v1alpha1.py. Do not edit.\n"
    return header + kubeyaml.dump(build_crd())
