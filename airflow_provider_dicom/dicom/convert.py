"""One DICOM instance -> one row of the Cloud Healthcare BigQuery table, in either table variant.

`InstanceConverter` is what the export holds: one per export, no per-instance state. The
flattened table is made by the one walker (walker.py) through an adapter per input:

- `convert_lean`: a header scanned from bytes (scan.py; scanned.py), the route of folders and
  gs:// prefixes, without pydicom objects;
- `convert_json_model`: DICOM JSON (PS3.18 F.2; json_model.py), the route of DICOMweb servers,
  without a pydicom Dataset (either table; the JSON table's Metadata by json_table.py);
- `convert`: a pydicom Dataset (datasets.py), for what only pydicom can judge.

Both adapters that skip pydicom raise NeedsPydicom for what they cannot settle; the caller then
converts that instance from a Dataset. The single-JSON-column table (`schemaJson`) holds pydicom's
own DICOM JSON of the Dataset (`to_json_dict`): `convert` makes it so (and is the oracle the tests
hold the other routes to); `convert_lean` and `convert_json_model` write the same bytes by walking
the scanned header or the DICOM JSON (json_table.py), or raise NeedsPydicom.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Unpack

from airflow_provider_dicom.dicom.scanned import instance_parts as scanned_parts
from airflow_provider_dicom.dicom.schema import INTEGER, JSON, NULLABLE, REPEATED, STRING, TIMESTAMP, Field
from airflow_provider_dicom.dicom.tags import tag_reference
from airflow_provider_dicom.dicom.walker import (  # noqa: F401 - the converter's vocabulary, for its callers
    DROPPED_TAGS_FIELD,
    MAX_NESTING,
    OTHER_ELEMENTS_FIELD,
    TRAILING_FIELDS,
    ConvertedInstance,
    NeedsPydicom,
    StoredFacts,
    timestamp_text,
    walk_instance,
)
from airflow_provider_dicom.model.options import SchemaVariant

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydicom.dataset import Dataset

    from airflow_provider_dicom.dicom.scan import LeanInstance

JSON_SCHEMA_FIELDS = (
    Field("StudyInstanceUID", STRING, NULLABLE),
    Field("SeriesInstanceUID", STRING, NULLABLE),
    Field("SOPInstanceUID", STRING, NULLABLE),
    Field("SourceDicomStore", STRING, NULLABLE),
    Field("Metadata", JSON, NULLABLE),
    Field("StructuredStorageSize", INTEGER, NULLABLE),
    Field("DroppedTags", STRING, REPEATED),
    Field("StorageClass", STRING, NULLABLE),
    Field("LastUpdated", TIMESTAMP, NULLABLE),
    Field("BlobStorageSize", INTEGER, NULLABLE),
    Field("Type", STRING, NULLABLE),
)


class InstanceConverter:
    """Converts instances into rows of one table variant (flattened or JSON).

    One converter serves a whole export: it holds no per-instance state, only caches of
    dictionary facts and schema fields, which makes repeated instances cheap.
    """

    def __init__(self, schema: str | SchemaVariant = SchemaVariant.FLATTENED, max_depth: int = MAX_NESTING):
        self.schema = SchemaVariant.parse(schema)
        if not 1 <= max_depth <= MAX_NESTING:
            raise ValueError(f"max_depth must be between 1 and {MAX_NESTING}, got {max_depth!r}")
        self.max_depth = max_depth

    def convert(
        self, ds: Dataset, *, source_store: str | None = None, **facts: Unpack[StoredFacts]
    ) -> ConvertedInstance:
        """The row of a pydicom Dataset (`source_store`: the JSON table's SourceDicomStore)."""
        if self.schema is SchemaVariant.JSON:
            return self._convert_json(ds, source_store, **facts)
        from airflow_provider_dicom.dicom.datasets import instance_parts

        return walk_instance(instance_parts(ds), self.max_depth, **facts)

    def convert_lean(self, lean: LeanInstance, **facts: Unpack[StoredFacts]) -> ConvertedInstance:
        """The same row as `convert` on the Dataset pydicom would build from the same file, made
        from a scanned header (scan.py) without pydicom objects: the export's fast route.

        Either table (the JSON table's Metadata by json_table.py). Raises NeedsPydicom when the
        instance holds something only pydicom can decode; convert it with
        `convert(parse.to_dataset(...))` then."""
        if self.schema is SchemaVariant.JSON:
            from airflow_provider_dicom.dicom.json_table import json_metadata

            metadata, dropped = json_metadata(scanned_parts(lean, settle=False))
            # Sequences nested deeper than the scan walks (scan.MAX_SEQUENCE_DEPTH): listed, not
            # lost silently.
            dropped.extend(tag_reference(tag) for tag in lean.cut)
            return _json_row(metadata, dropped, None, facts)
        return walk_instance(scanned_parts(lean), self.max_depth, **facts)

    def convert_json_model(
        self,
        metadata: dict[str, Any],
        *,
        on_bulk_data: Callable[[str], None] | None = None,
        storage_class: str = "STANDARD",
    ) -> ConvertedInstance:
        """The same row as `convert` on the Dataset `json_model.dataset_from_json` builds from one
        instance's DICOM JSON, made from the JSON itself, for either table; raises NeedsPydicom
        for JSON it leaves to pydicom (convert `dataset_from_json(...)` then)."""
        from airflow_provider_dicom.dicom.json_model import prepare

        return self.convert_prepared(prepare(metadata, on_bulk_data), storage_class=storage_class)

    def convert_prepared(
        self, prepared: dict[str, Any], *, storage_class: str = "STANDARD"
    ) -> ConvertedInstance:
        """`convert_json_model` of DICOM JSON `json_model.prepare` has made ready: the flattened
        row by the walker (json_model.py), the JSON table's Metadata by json_table.py."""
        if self.schema is SchemaVariant.JSON:
            from airflow_provider_dicom.dicom.json_table import json_model_metadata

            metadata, dropped = json_model_metadata(prepared)
            return _json_row(metadata, dropped, None, {"storage_class": storage_class})
        from airflow_provider_dicom.dicom.json_model import instance_parts

        return walk_instance(instance_parts(prepared), self.max_depth, storage_class=storage_class)

    # -- JSON variant ------------------------------------------------------------------------

    def _convert_json(
        self,
        ds: Dataset,
        source_store: str | None,
        **facts: Unpack[StoredFacts],
    ) -> ConvertedInstance:
        dropped: list[str] = []

        def bulk(element: Any) -> str:
            dropped.append(tag_reference(element.tag))
            return ""

        file_meta = getattr(ds, "file_meta", None)
        from airflow_provider_dicom.dicom.parse import CUT_SEQUENCES

        # Sequences nested deeper than the reader walks (scan.MAX_SEQUENCE_DEPTH): listed, not lost silently.
        dropped.extend(tag_reference(tag) for tag in getattr(ds, CUT_SEQUENCES, ()))
        # Deferred: a raw element with a length but no value read (pydicom also gives empty
        # elements a None value, with length 0; those are kept as empty values).
        deferred = [
            tag for tag, elem in ds._dict.items()
            if getattr(elem, "is_raw", False) and elem.value is None and getattr(elem, "length", 0)
        ]
        if deferred:
            # Pixel data the reader skipped: listed as dropped, never read just to be dropped.
            from pydicom.dataset import Dataset

            dropped.extend(tag_reference(tag) for tag in deferred)
            kept = Dataset({tag: elem for tag, elem in ds._dict.items() if tag not in deferred})
            implicit, little = ds.original_encoding[:2]
            kept.set_original_encoding(implicit, little, None)
            ds = kept
        metadata = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=bulk, suppress_invalid_tags=True)
        for tag, elem in ds._dict.items():
            key = tag_reference(tag)
            if key in metadata or key in dropped or not tag & 0xFFFF:
                continue
            # pydicom could not convert this value (e.g. IS "1A"): keep its text rather than lose it,
            # as the flattened table keeps it in OtherElements.
            text = _raw_text(elem)
            if text is not None:
                metadata[key] = {"vr": elem.VR or "UN", "Value": text}
        if file_meta is not None:
            metadata.update(file_meta.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=bulk))
        metadata = {key: value for key, value in metadata.items() if "BulkDataURI" not in value and key[4:] != "0000"}
        return _json_row(metadata, dropped, source_store, facts)


def _json_row(
    metadata: dict[str, Any], dropped: list[str], source_store: str | None, facts: StoredFacts
) -> ConvertedInstance:
    """The JSON table's row of an instance's Metadata and the TagReferences it dropped."""
    study = _json_uid(metadata, "0020000D")
    series = _json_uid(metadata, "0020000E")
    sop = _json_uid(metadata, "00080018")
    encoded = json.dumps(metadata, separators=(",", ":"))
    row: dict[str, Any] = {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": sop,
        # An object, not a string holding JSON: a JSON column loads it as the object itself.
        "Metadata": metadata,
        "StructuredStorageSize": len(encoded.encode()),
        "StorageClass": facts.get("storage_class", "STANDARD"),
        "Type": "CREATE",
    }
    if dropped:
        row["DroppedTags"] = sorted(set(dropped))
    if source_store is not None:
        row["SourceDicomStore"] = source_store
    last_updated = facts.get("last_updated")
    if last_updated is not None:
        row["LastUpdated"] = timestamp_text(last_updated)
    blob_storage_size = facts.get("blob_storage_size")
    if blob_storage_size is not None:
        row["BlobStorageSize"] = int(blob_storage_size)
    fields = JSON_SCHEMA_FIELDS if source_store is not None else tuple(
        f for f in JSON_SCHEMA_FIELDS if f.name != "SourceDicomStore"
    )
    return ConvertedInstance({k: v for k, v in row.items() if v is not None}, fields, study, series, sop)


def _raw_text(elem: Any) -> list[str] | None:
    """The values of an element pydicom could not convert, as text; None if it has no text form."""
    value = getattr(elem, "value", None)
    if isinstance(value, bytes):
        return [part.strip(" \x00") for part in value.decode("latin_1").split("\\")]
    if isinstance(value, str):
        return [value]
    return None


def _json_uid(metadata: dict, key: str) -> str | None:
    values = metadata.get(key, {}).get("Value")
    return values[0] if values else None
