"""Request bodies checked against a Google API discovery document: the API's machine-readable contract.

The discovery document shipped in google-api-python-client
(`googleapiclient/discovery_cache/documents/healthcare.v1.json`) describes every request body:
its fields, their JSON types, enum values and nested messages. The emulator rejects what the
real API would reject as malformed (an unknown field is a 400 there too), and the unit tests walk
every body the hook builds through the same checker, so a typo in a field name fails a test
here instead of a production export. Only the JSON mapping is checked, not semantics (which
destination, which URI): those are the server's business and live in the emulator.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
_INT64_TEXT = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class Violation:
    """One way a body breaks the contract. `path` is the JSON path in the API's snake_case
    (`bigquery_destination.write_disposition`), as Google's error messages name fields."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(body)'}: {self.message}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _join(path: str, name: str) -> str:
    return f"{path}.{_snake(name)}" if path else _snake(name)


class DiscoveryContract:
    """The schemas and methods of one discovery document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document.get("schemas", {})
        self._methods: dict[str, dict[str, Any]] = {}
        self._collect(document)

    def _collect(self, node: dict[str, Any]) -> None:
        for method in node.get("methods", {}).values():
            self._methods[method["id"]] = method
        for child in node.get("resources", {}).values():
            self._collect(child)

    @property
    def revision(self) -> str:
        return str(self.document.get("revision", ""))

    def method(self, method_id: str) -> dict[str, Any]:
        try:
            return self._methods[method_id]
        except KeyError:
            raise KeyError(f"no method {method_id!r} in the {self.document.get('name')} discovery document") from None

    def request_schema(self, method_id: str) -> str | None:
        request = self.method(method_id).get("request")
        return request["$ref"] if request else None

    def check_request(self, method_id: str, body: Any) -> list[Violation]:
        """Everything wrong with `body` as the request of `method_id` (empty when it conforms)."""
        schema = self.request_schema(method_id)
        if schema is None:
            return [] if body in (None, {}) else [Violation("", f"{method_id} takes no request body")]
        return self.check(schema, body)

    def check(self, schema: str | dict[str, Any], value: Any, path: str = "") -> list[Violation]:
        """Walk `value` against a schema (an id such as "ExportDicomDataRequest", or a node)."""
        found: list[Violation] = []
        self._walk(self.schemas[schema] if isinstance(schema, str) else schema, value, path, found)
        return found

    def _walk(self, node: dict[str, Any], value: Any, path: str, found: list[Violation]) -> None:
        if "$ref" in node:
            ref = node["$ref"]
            if ref not in self.schemas:
                found.append(Violation(path, f"schema {ref!r} is not in the discovery document"))
                return
            node = self.schemas[ref]
        kind = node.get("type")
        if kind == "any":
            return
        if kind == "object":
            self._walk_object(node, value, path, found)
        elif kind == "array":
            if not isinstance(value, list):
                found.append(Violation(path, f"expected a list, got {_type_name(value)}"))
                return
            for index, item in enumerate(value):
                self._walk(node.get("items", {"type": "any"}), item, f"{path}[{index}]", found)
        elif kind == "string":
            self._walk_string(node, value, path, found)
        elif kind == "boolean":
            if not isinstance(value, bool):
                found.append(Violation(path, f"expected true or false, got {_type_name(value)}"))
        elif kind == "integer":
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and _INT64_TEXT.match(value)
            )
            if not ok:
                found.append(Violation(path, f"expected an integer, got {_type_name(value)}"))
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                found.append(Violation(path, f"expected a number, got {_type_name(value)}"))
        else:
            found.append(Violation(path, f"schema type {kind!r} is not understood by this checker"))

    def _walk_object(self, node: dict[str, Any], value: Any, path: str, found: list[Violation]) -> None:
        if not isinstance(value, dict):
            found.append(Violation(path, f"expected an object, got {_type_name(value)}"))
            return
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                self._walk(properties[key], item, _join(path, key), found)
            elif extra is not None:
                self._walk(extra, item, f"{path}[{key!r}]", found)
            else:
                found.append(Violation(path, f'Unknown name "{key}": Cannot find field.'))

    def _walk_string(self, node: dict[str, Any], value: Any, path: str, found: list[Violation]) -> None:
        fmt = node.get("format")
        if fmt in ("int64", "uint64") and isinstance(value, int) and not isinstance(value, bool):
            return  # the JSON mapping accepts int64 as a number on input
        if not isinstance(value, str):
            found.append(Violation(path, f"expected a string, got {_type_name(value)}"))
            return
        enum = node.get("enum")
        if enum is not None and value not in enum:
            found.append(Violation(path, f"invalid value {value!r}: expected one of {', '.join(enum)}"))
        if fmt in ("int64", "uint64") and not _INT64_TEXT.match(value):
            found.append(Violation(path, f"invalid int64 {value!r}"))
        elif fmt == "google-datetime" and not _DATETIME.match(value):
            found.append(Violation(path, f"invalid RFC 3339 timestamp {value!r}"))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def discovery_document_path(service: str = "healthcare", version: str = "v1"):
    """The discovery document google-api-python-client ships for `service` `version`."""
    return resources.files("googleapiclient") / "discovery_cache" / "documents" / f"{service}.{version}.json"


@functools.lru_cache(maxsize=4)
def load_contract(service: str = "healthcare", version: str = "v1") -> DiscoveryContract:
    with discovery_document_path(service, version).open("r", encoding="utf-8") as handle:
        return DiscoveryContract(json.load(handle))
