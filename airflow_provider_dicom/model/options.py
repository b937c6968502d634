"""The write options of an export, validated once and shared by the operator, the CLI and the engine.

The Cloud Healthcare API has two overlapping ways to say what happens to an existing table: the
legacy `force` flag and the `writeDisposition` enum. Sending both is an error, and gcloud spells
the enum in kebab case; we accept both spellings and normalise to the API's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class WriteDisposition(str, Enum):
    WRITE_EMPTY = "WRITE_EMPTY"
    WRITE_TRUNCATE = "WRITE_TRUNCATE"
    WRITE_APPEND = "WRITE_APPEND"

    @classmethod
    def parse(cls, value: object) -> WriteDisposition:
        if isinstance(value, WriteDisposition):
            return value
        if isinstance(value, str):
            normalised = value.strip().upper().replace("-", "_")
            try:
                return cls(normalised)
            except ValueError:
                pass
        raise ValueError(
            f"unknown write disposition {value!r}: expected one of WRITE_EMPTY, WRITE_TRUNCATE, "
            "WRITE_APPEND (or write-empty, write-truncate, write-append)"
        )


class SchemaVariant(str, Enum):
    """`flattened`: one column per data element. `json`: the schemaJson single-column table."""

    FLATTENED = "flattened"
    JSON = "json"

    @classmethod
    def parse(cls, value: object) -> SchemaVariant:
        if isinstance(value, SchemaVariant):
            return value
        if isinstance(value, str):
            normalised = value.strip().lower()
            aliases = {"schemaflattened": "flattened", "schemajson": "json"}
            try:
                return cls(aliases.get(normalised, normalised))
            except ValueError:
                pass
        raise ValueError(f"unknown schema {value!r}: expected 'flattened' or 'json'")


@dataclass(frozen=True)
class WriteOptions:
    """What to do with an existing destination table.

    `disposition` is the effective rule. `force` is the legacy flag as the caller gave it and
    `write_disposition_given` says whether the enum was used, so a Healthcare API request sends
    exactly what the user asked for, and the two rules differ only where Google's do: with the
    legacy flag (given or left out) any existing table is an error, while WRITE_EMPTY accepts an
    existing empty one.
    """

    disposition: WriteDisposition
    force: bool | None = None
    write_disposition_given: bool = False

    @classmethod
    def resolve(cls, write_disposition: object, force: object) -> WriteOptions:
        if write_disposition is not None and force is not None:
            raise ValueError(
                f"set either write_disposition ({write_disposition!r}) or force ({force!r}), not both: "
                "force is the legacy spelling of WRITE_TRUNCATE/WRITE_EMPTY"
            )
        if write_disposition is not None:
            return cls(WriteDisposition.parse(write_disposition), None, True)
        if force is not None and not isinstance(force, bool):
            raise ValueError(f"force must be True or False, got {force!r}")
        given = force if isinstance(force, bool) else None
        return cls(WriteDisposition.WRITE_TRUNCATE if given else WriteDisposition.WRITE_EMPTY, given, False)

    @property
    def fails_on_existing_table(self) -> bool:
        """True when an existing table, even an empty one, must make the export fail."""
        return not self.write_disposition_given and self.disposition is WriteDisposition.WRITE_EMPTY

    def to_bigquery_destination(self) -> dict:
        """The write fields of a Healthcare `bigqueryDestination`: never both force and writeDisposition."""
        if self.write_disposition_given:
            return {"writeDisposition": self.disposition.value}
        if self.force is not None:
            return {"force": self.force}
        return {}
