"""The chart's values schema for node pools and tolerations, generated from the models the
operator loads its config with (``NodePool``, and the API's ``Toleration``), so that
``helm install`` refuses what the operator would refuse, in the same words of grammar.

``python -m kubetrain_operator.values_schema --write`` reads the committed
``charts/kubetrain/values.schema.json``, replaces only the generated definitions (the rest
of the file is written by hand) and writes it back; without ``--write`` it exits 1 when the
file is stale. Rerun it after changing ``NodePool``, ``Toleration`` or the name grammars.

What draft-07 can say, it says: types, enums, patterns and lengths come from pydantic's own
JSON schema; the tolerations' cross-field rules become ``if``/``then`` from the small table
``TOLERATION_RULES`` below. What it cannot (``defaultNodePool`` naming a key of
``nodePools``, the prefix length of a label key) is checked when the operator loads its
config, which refuses to start with one line naming the file and the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from kubetrain.api.grammar import DnsLabel, DnsSubdomain, ImageReference

from .config import NodePool

Schema = dict[str, Any]

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "charts" / "kubetrain" / "values.schema.json"
#: Definitions this module owns, by the model they come from (and the models' own nested
#: models, ``toleration`` among them); the rest of the file is hand-written.
MODELS: dict[str, type[BaseModel]] = {"nodePool": NodePool}
#: Definitions this module owns, by the name grammar they say; the hand-written part refers
#: to them for the other fields that the operator's config checks.
GRAMMARS: dict[str, Any] = {
    "dnsName": DnsLabel,
    "dnsSubdomain": DnsSubdomain,
    "imageReference": ImageReference,
}
#: Keys first in this order, for a reader; the others keep pydantic's (stable) order.
LEADING_KEYS = ("type", "description", "additionalProperties", "required", "properties")
#: JSON-schema keys pydantic writes that a values schema does not need (the ``x-kubernetes-*``
#: extensions are CEL for the API server; their draft-07 half is ``TOLERATION_RULES``).
DROPPED_KEYS = ("title", "default")


def is_(field: str, value: str) -> Schema:
    """The field is present and equal to ``value``."""
    return {"required": [field], "properties": {field: {"const": value}}}


def present(field: str) -> Schema:
    return {"required": [field]}


def filled(field: str) -> Schema:
    """Present and not the empty string."""
    return {"required": [field], "properties": {field: {"minLength": 1}}}


def empty(field: str) -> Schema:
    """Absent, or the empty string (what Kubernetes reads as unset)."""
    return {"properties": {field: {"maxLength": 0}}}


def negate(schema: Schema) -> Schema:
    return {"not": schema}


#: The kubelet's toleration rules (``Toleration``'s validators and CEL) as (when, then):
#: Exists takes no value; Equal, the default operator, needs a key; tolerationSeconds
#: is for NoExecute only.
TOLERATION_RULES: tuple[tuple[Schema, Schema], ...] = (
    (is_("operator", "Exists"), empty("value")),
    (negate(is_("operator", "Exists")), filled("key")),
    (present("tolerationSeconds"), is_("effect", "NoExecute")),
)


def definition_name(model_name: str) -> str:
    """``NodePool`` → ``nodePool``: the values schema's own naming."""
    return model_name[:1].lower() + model_name[1:]


def generated_definitions() -> dict[str, Schema]:
    """Every definition this module owns, ready for the values schema."""
    found = {name: TypeAdapter(kind).json_schema() for name, kind in GRAMMARS.items()}
    for name, model in MODELS.items():
        schema = model.model_json_schema(ref_template="#/definitions/{model}")
        for sub_name, sub_schema in schema.pop("$defs", {}).items():
            found[definition_name(sub_name)] = sub_schema
        found[name] = schema
    found = {name: _for_helm(schema) for name, schema in found.items()}
    found["toleration"]["allOf"] = [{"if": when, "then": then} for when, then in TOLERATION_RULES]
    return found


def _for_helm(node: Any) -> Any:
    """pydantic's JSON schema, said the way this chart's hand-written schema says it."""
    if isinstance(node, list):
        return [_for_helm(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _without_null(_map_keys_by_property_names(node))
    kept = {
        key: _converted(key, value)
        for key, value in node.items()
        if key not in DROPPED_KEYS and not key.startswith("x-kubernetes-")
    }
    leading = {key: kept[key] for key in LEADING_KEYS if key in kept}
    return {**leading, **kept}


def _converted(key: str, value: Any) -> Any:
    if key == "$ref":
        return _ref(value)
    if key == "properties":  # field names, not schema keywords: keep each one
        return {field: _for_helm(schema) for field, schema in value.items()}
    return _for_helm(value)


def _without_null(node: Schema) -> Schema:
    """``anyOf: [X, null]`` (pydantic's ``X | None``) → X: an unset value is left out of
    the values, not written as null (which Helm reads as "delete this key")."""
    options = node.get("anyOf")
    if not options or {"type": "null"} not in options or len(options) != 2:
        return node
    (kept,) = [option for option in options if option != {"type": "null"}]
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    return {**kept, **rest}


def _map_keys_by_property_names(node: Schema) -> Schema:
    """pydantic says a map's key pattern with ``patternProperties``, which lets any other key
    through; ``propertyNames`` refuses it."""
    patterns = node.get("patternProperties")
    if not patterns or len(patterns) != 1:
        return node
    ((pattern, values),) = patterns.items()
    rest = {key: value for key, value in node.items() if key != "patternProperties"}
    names = {"pattern": pattern, **rest.pop("propertyNames", {})}
    return {**rest, "propertyNames": names, "additionalProperties": values}


def _ref(target: str) -> str:
    prefix = "#/definitions/"
    return prefix + definition_name(target.removeprefix(prefix))


def regenerated(text: str) -> str:
    """The schema file's text with the generated definitions replaced (in place, so that a
    diff shows only what changed) and the hand-written rest kept as it is."""
    schema = json.loads(text)
    schema.setdefault("definitions", {}).update(generated_definitions())
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetrain_operator.values_schema")
    parser.add_argument("--write", action="store_true", help="update the file in place")
    parser.add_argument("--file", type=Path, default=SCHEMA_FILE)
    args = parser.parse_args(argv)
    current = args.file.read_text()
    fresh = regenerated(current)
    if args.write:
        args.file.write_text(fresh)
        return 0
    if fresh != current:
        print(f"{args.file} is stale: run {parser.prog} --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
